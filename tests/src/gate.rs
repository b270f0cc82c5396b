//! A TCP pass-through a test can close and reopen: it takes one service away
//! from one caller (e.g. billing-svc from agent-svc) while the service itself
//! keeps running for everyone else. Closed, it cuts the connections in
//! flight and refuses new ones (accepted, then dropped at once), as a
//! crashed or partitioned service would look to a gRPC client.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

#[derive(Debug)]
struct Inner {
    target: Mutex<Option<SocketAddr>>,
    open: watch::Sender<bool>,
}

#[derive(Debug, Clone)]
pub struct Gate {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Gate {
    /// An open gate with nowhere to forward to yet (see [`Gate::forward_to`]).
    pub async fn start() -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, _) = watch::channel(true);
        let inner = Arc::new(Inner {
            target: Mutex::new(None),
            open,
        });
        let accepting = inner.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let target = *accepting.target.lock().unwrap();
                let mut open = accepting.open.subscribe();
                let (Some(target), true) = (target, *open.borrow_and_update()) else {
                    drop(client);
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut upstream) = (client, upstream);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = open.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Gate { addr, inner }
    }

    /// The URL callers use instead of the service's own.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn forward_to(&self, target: SocketAddr) {
        *self.inner.target.lock().unwrap() = Some(target);
    }

    /// Cuts every connection through the gate and refuses new ones.
    pub fn close(&self) {
        self.inner.open.send_replace(false);
    }

    pub fn open(&self) {
        self.inner.open.send_replace(true);
    }
}
