//! `crewmesh`: the launcher. `crewmesh up` runs every service and the gateway
//! in one process (the very `serve` functions the per-service binaries run);
//! `crewmesh keygen` makes the token keys a production deployment needs.

use std::{future::Future, net::SocketAddr, pin::Pin, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use mesh_kit::{
    ServiceId, Shutdown,
    auth::{PUBLIC_KEYS_ENV, SIGNING_KEY_ENV, SigningKey},
    config::{Environment, listen_addr},
    secrets::Progress,
    service::ServiceConfig,
};
use secrecy::ExposeSecret as _;
use tokio::{net::TcpListener, task::JoinSet};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[derive(Debug, Parser)]
#[command(
    name = "crewmesh",
    version,
    about = "Crewmesh: AI employees in Slack and WhatsApp"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service and the gateway in this process, each on its own port.
    Up {
        /// Give up waiting for the services to report SERVING after this many seconds.
        #[arg(long, default_value_t = 60)]
        ready_timeout: u64,
    },
    /// Generate the Ed25519 token keys of every service and a Fernet key for
    /// secrets at rest, as environment lines.
    Keygen,
    /// Re-encrypt every stored secret under the newest key of
    /// CREWMESH_ENCRYPTION_KEYS. Safe to interrupt and run again.
    RotateKeys {
        /// Rows per transaction.
        #[arg(long, default_value_t = 500)]
        batch: i64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up { ready_timeout } => up(Duration::from_secs(ready_timeout)).await,
        Command::Keygen => keygen(),
        Command::RotateKeys { batch } => rotate_keys(batch).await,
    }
}

type ServeFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Where this process bound each gRPC service, so services that call others
/// find them even on non-default ports.
type Bound = [(ServiceId, String)];

struct Grpc {
    id: ServiceId,
    addr_env: &'static str,
    port: u16,
    serve: fn(ServiceConfig, TcpListener, Shutdown, &Bound) -> ServeFuture,
}

fn url_in(bound: &Bound, id: ServiceId) -> String {
    bound
        .iter()
        .find(|(svc, _)| *svc == id)
        .map(|(_, url)| url.clone())
        .unwrap_or_default()
}

const GRPC_SERVICES: [Grpc; 5] = [
    Grpc {
        id: ServiceId::Identity,
        addr_env: identity_svc::startup::ADDR_ENV,
        port: identity_svc::startup::DEFAULT_PORT,
        serve: |c, l, s, _| Box::pin(identity_svc::startup::serve(c, l, s)),
    },
    Grpc {
        id: ServiceId::Agent,
        addr_env: agent_svc::startup::ADDR_ENV,
        port: agent_svc::startup::DEFAULT_PORT,
        serve: |c, l, s, bound| {
            let billing_url = url_in(bound, ServiceId::Billing);
            Box::pin(async move {
                let mut config = agent_svc::config::AgentConfig::from_env(c)?;
                config.billing_url = billing_url;
                agent_svc::startup::serve_with(config, l, s).await
            })
        },
    },
    Grpc {
        id: ServiceId::Llm,
        addr_env: llm_svc::startup::ADDR_ENV,
        port: llm_svc::startup::DEFAULT_PORT,
        serve: |c, l, s, bound| {
            let (agent_url, billing_url, media_url) = (
                url_in(bound, ServiceId::Agent),
                url_in(bound, ServiceId::Billing),
                url_in(bound, ServiceId::Media),
            );
            Box::pin(async move {
                let mut config = llm_svc::config::LlmConfig::from_env(c)?;
                config.agent_url = agent_url;
                config.billing_url = billing_url;
                config.media_url = media_url;
                llm_svc::startup::serve_with(config, l, s).await
            })
        },
    },
    Grpc {
        id: ServiceId::Billing,
        addr_env: billing_svc::startup::ADDR_ENV,
        port: billing_svc::startup::DEFAULT_PORT,
        serve: |c, l, s, _| Box::pin(billing_svc::startup::serve(c, l, s)),
    },
    Grpc {
        id: ServiceId::Media,
        addr_env: media_svc::startup::ADDR_ENV,
        port: media_svc::startup::DEFAULT_PORT,
        serve: |c, l, s, _| Box::pin(media_svc::startup::serve(c, l, s)),
    },
];

async fn bind(service: ServiceId, addr: SocketAddr, env: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "{service} cannot listen on {addr}: is another Crewmesh running? Set {env} to move it"
        )
    })
}

/// Loopback URL of a bound address, for the gateway and the ready check.
fn local_url(addr: SocketAddr) -> String {
    format!("http://127.0.0.1:{}", addr.port())
}

// The launcher talks to a person at a terminal: printing is its job.
#[allow(clippy::print_stdout)]
async fn up(ready_timeout: Duration) -> anyhow::Result<()> {
    let environment = Environment::from_env()?;
    mesh_kit::telemetry::init(environment);
    let shutdown = Shutdown::new();
    mesh_kit::shutdown::on_signal(shutdown.clone());

    let mut tasks: JoinSet<(ServiceId, anyhow::Result<()>)> = JoinSet::new();
    // Bind everything first: a service may need another's address.
    let mut bound_services = Vec::new();
    let mut grpc_urls = Vec::new();
    for svc in &GRPC_SERVICES {
        let config =
            ServiceConfig::from_env(svc.id).with_context(|| format!("configuring {}", svc.id))?;
        let addr = listen_addr(svc.addr_env, svc.port)?;
        let listener = bind(svc.id, addr, svc.addr_env).await?;
        let url = local_url(listener.local_addr()?);
        println!("  {:<13} grpc  {url}", svc.id.as_str());
        grpc_urls.push((svc.id, url));
        bound_services.push((svc, config, listener));
    }
    for (svc, config, listener) in bound_services {
        let (id, stop) = (svc.id, shutdown.clone());
        let serving = (svc.serve)(config, listener, stop, &grpc_urls);
        tasks.spawn(async move { (id, serving.await) });
    }

    // The gateway finds the services where this process bound them.
    let mut gateway_config = gateway::startup::Config::from_env()?;
    let upstreams = &mut gateway_config.upstreams;
    upstreams.identity = url_in(&grpc_urls, ServiceId::Identity);
    upstreams.agent = url_in(&grpc_urls, ServiceId::Agent);
    upstreams.llm = url_in(&grpc_urls, ServiceId::Llm);
    upstreams.billing = url_in(&grpc_urls, ServiceId::Billing);
    upstreams.media = url_in(&grpc_urls, ServiceId::Media);
    let addr = listen_addr(gateway::startup::ADDR_ENV, gateway::startup::DEFAULT_PORT)?;
    let listener = bind(ServiceId::Gateway, addr, gateway::startup::ADDR_ENV).await?;
    let http = local_url(listener.local_addr()?);
    println!("  {:<13} http  {http}  (API docs: {http}/docs)", "gateway");
    // One process, one recorder: a single endpoint covers every service.
    if let Some(addr) = mesh_kit::metrics::metrics_addr()? {
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!(
                "metrics cannot listen on {addr}: set {} to move it, or to off",
                mesh_kit::metrics::METRICS_ADDR_ENV
            )
        })?;
        let url = local_url(listener.local_addr()?);
        println!("  {:<13} http  {url}/metrics", "metrics");
        let stop = shutdown.clone();
        tokio::spawn(mesh_kit::metrics::serve(listener, stop));
    }
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let result = gateway::startup::serve(gateway_config, listener, stop).await;
        (ServiceId::Gateway, result)
    });

    println!("waiting for every service to report SERVING (migrations run first)…");
    tokio::select! {
        ready = wait_serving(&grpc_urls, ready_timeout) => match ready {
            Ok(()) => println!("Crewmesh is up: {http}/readyz — Ctrl-C stops it"),
            Err(e) => {
                shutdown.cancel();
                return Err(e);
            }
        },
        Some(joined) = tasks.join_next() => {
            shutdown.cancel();
            return exited_early(joined);
        }
    }

    // Run until a signal, or until any service stops on its own.
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        if !shutdown.is_cancelled() {
            shutdown.cancel();
            failure = Some(exited_early(joined));
        } else if let Ok((id, Err(e))) = joined {
            tracing::error!(service = %id, error = %e, "stopped with an error");
        }
    }
    failure.unwrap_or(Ok(()))
}

fn exited_early(
    joined: Result<(ServiceId, anyhow::Result<()>), tokio::task::JoinError>,
) -> anyhow::Result<()> {
    match joined {
        Ok((id, Err(e))) => Err(e.context(format!("{id} failed"))),
        Ok((id, Ok(()))) => bail!("{id} stopped unexpectedly"),
        Err(e) => Err(anyhow::Error::new(e).context("a service panicked")),
    }
}

async fn wait_serving(services: &[(ServiceId, String)], timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    for (id, url) in services {
        let channel = mesh_kit::client::lazy_channel(url)?;
        let mut client = HealthClient::new(channel);
        loop {
            let request = HealthCheckRequest {
                service: String::new(),
            };
            if let Ok(response) = client.check(request).await
                && response.into_inner().status() == ServingStatus::Serving
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{id} did not report SERVING within {timeout:?}: check that PostgreSQL, Redis and the S3 storage (S3_ENDPOINT) are up (`scripts/up` starts all three)"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
fn keygen() -> anyhow::Result<()> {
    let mut public = Vec::new();
    println!("# Each service gets its own {SIGNING_KEY_ENV}; all get the same {PUBLIC_KEYS_ENV}.");
    for svc in ServiceId::ALL {
        let key = SigningKey::generate()?;
        public.push(format!("{}={}", svc.as_str(), key.public_base64()?));
        println!(
            "# {svc}\n{SIGNING_KEY_ENV}={}",
            key.to_base64().expose_secret()
        );
    }
    println!("{PUBLIC_KEYS_ENV}={}", public.join(","));
    println!(
        "# Secrets at rest, newest first; to rotate, prepend a new key, run `crewmesh rotate-keys`, then drop the old one.\nCREWMESH_ENCRYPTION_KEYS={}",
        keyring::Key::generate()?
    );
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn rotate_keys(batch: i64) -> anyhow::Result<()> {
    if batch < 1 {
        bail!("--batch must be at least 1");
    }
    let environment = Environment::from_env()?;
    mesh_kit::telemetry::init(environment);
    let keyring = mesh_kit::secrets::keyring_from_env(environment)?;
    let report = |what: &'static str| {
        move |p: Progress| {
            println!(
                "  {what}: {}/{} scanned, {} re-encrypted",
                p.scanned, p.total, p.rotated
            );
        }
    };
    let mut done = Vec::new();

    println!("re-encrypting LLM keys under the newest key…");
    let config = ServiceConfig::from_env(ServiceId::Billing)?;
    let billing = mesh_kit::service::connect(&config, &billing_svc::startup::STORAGE).await?;
    let progress =
        billing_svc::rotation::rotate_llm_keys(&billing.db, &keyring, batch, report("llm_keys"))
            .await?;
    done.push(("LLM keys", progress));

    println!("re-encrypting channel tokens under the newest key…");
    let config = ServiceConfig::from_env(ServiceId::Agent)?;
    let agent = mesh_kit::service::connect(&config, &agent_svc::startup::STORAGE).await?;
    let progress = agent_svc::channels::rotate_tokens(
        &agent.db,
        &keyring,
        batch,
        report("channel_connections"),
    )
    .await?;
    done.push(("channel tokens", progress));

    for (what, p) in done {
        println!(
            "done: {} of {} {what} re-encrypted ({} were already current).",
            p.rotated,
            p.total,
            p.scanned - p.rotated
        );
    }
    println!("Every stored secret is under the newest key: the old key can be removed now.");
    Ok(())
}
