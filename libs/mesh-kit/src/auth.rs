//! The caller identity and the tokens that carry it.
//!
//! identity-svc signs user tokens; every service signs its own service tokens.
//! All of them are EdDSA (Ed25519) JWTs whose `kid` names the signing service,
//! and every service verifies them locally with the public keys alone. The
//! verifier enforces who may sign what: only identity-svc's key signs user
//! tokens, and a service token must be signed by the service it names, so one
//! leaked service key cannot mint users or impersonate another service.

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use aws_lc_rs::{
    digest,
    signature::{Ed25519KeyPair, KeyPair},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tonic::Status;
use uuid::Uuid;

use crate::{config::Environment, error::ErrorCode};

const ISSUER: &str = "crewmesh";
const AUDIENCE: &str = "crewmesh";
/// Clock skew tolerated between pods.
const LEEWAY_SECS: u64 = 30;
/// Service tokens are short-lived and re-minted well before they expire.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    PlatformAdmin,
    CustomerAdmin,
    Operator,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::PlatformAdmin, Role::CustomerAdmin, Role::Operator];

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform_admin",
            Role::CustomerAdmin => "customer_admin",
            Role::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The services of the mesh, each of which has its own signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceId {
    Gateway,
    Identity,
    Agent,
    Llm,
    Billing,
    Media,
}

impl ServiceId {
    pub const ALL: [ServiceId; 6] = [
        ServiceId::Gateway,
        ServiceId::Identity,
        ServiceId::Agent,
        ServiceId::Llm,
        ServiceId::Billing,
        ServiceId::Media,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ServiceId::Gateway => "gateway",
            ServiceId::Identity => "identity-svc",
            ServiceId::Agent => "agent-svc",
            ServiceId::Llm => "llm-svc",
            ServiceId::Billing => "billing-svc",
            ServiceId::Media => "media-svc",
        }
    }

    pub fn parse(s: &str) -> Option<ServiceId> {
        ServiceId::ALL.into_iter().find(|svc| svc.as_str() == s)
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A person (or a tenant API key acting for one) calling the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCaller {
    pub user_id: Uuid,
    /// None for platform staff, who belong to no tenant.
    pub tenant_id: Option<Uuid>,
    pub role: Role,
    /// The platform_admin acting as this user, while impersonating.
    pub impersonator: Option<Uuid>,
    /// Set when the call was authenticated with a tenant API key.
    pub api_key_id: Option<Uuid>,
}

/// Who is calling, as proven by a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    User(UserCaller),
    Service(ServiceId),
}

impl Caller {
    /// The calling user, if it is one and has one of `roles`; 403 otherwise.
    pub fn require_role(&self, roles: &[Role]) -> Result<&UserCaller, Status> {
        match self {
            Caller::User(user) if roles.contains(&user.role) => Ok(user),
            Caller::User(user) => Err(ErrorCode::PermissionDenied
                .status(format!("the {} role may not do this", user.role.as_str()))),
            Caller::Service(svc) => {
                Err(ErrorCode::PermissionDenied
                    .status(format!("service {svc} may not call this RPC")))
            }
        }
    }

    /// Ok only for one of the named services; internal RPCs use this.
    pub fn require_service(&self, allowed: &[ServiceId]) -> Result<ServiceId, Status> {
        match self {
            Caller::Service(svc) if allowed.contains(svc) => Ok(*svc),
            Caller::Service(svc) => {
                Err(ErrorCode::PermissionDenied
                    .status(format!("service {svc} may not call this RPC")))
            }
            Caller::User(_) => {
                Err(ErrorCode::PermissionDenied.status("this RPC is internal to the mesh"))
            }
        }
    }

    pub fn user(&self) -> Option<&UserCaller> {
        match self {
            Caller::User(user) => Some(user),
            Caller::Service(_) => None,
        }
    }
}

impl UserCaller {
    /// The tenant a request acts on. Tenant users act on their own tenant: naming
    /// another is a 404, so they cannot learn that it exists. Platform admins
    /// act on any tenant but must name it.
    pub fn tenant_scope(&self, requested: Option<Uuid>) -> Result<Uuid, Status> {
        match (self.role, self.tenant_id, requested) {
            (Role::PlatformAdmin, _, Some(tenant)) => Ok(tenant),
            (Role::PlatformAdmin, Some(own), None) => Ok(own),
            (Role::PlatformAdmin, None, None) => Err(crate::error::invalid_field(
                "tenant_id",
                "platform admins must name the tenant",
            )),
            (_, Some(own), None) => Ok(own),
            (_, Some(own), Some(tenant)) if tenant == own => Ok(own),
            (_, Some(_), Some(_)) => Err(ErrorCode::NotFound.status("tenant not found")),
            (_, None, _) => Err(ErrorCode::PermissionDenied.status("caller belongs to no tenant")),
        }
    }
}

/// What identity-svc puts in a user token.
#[derive(Debug, Clone)]
pub struct UserClaims {
    pub user_id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub role: Role,
    pub impersonator: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    iat: i64,
    exp: i64,
    jti: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<Role>,
    /// RFC 8693 actor: the impersonating platform admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    act: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    akid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    svc: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token is signed by an unknown key")]
    UnknownKey,
    #[error("the token is invalid: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    #[error("the token's signer may not issue this kind of token")]
    WrongIssuer,
    #[error("the token could not be signed: {0}")]
    Signing(jsonwebtoken::errors::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error(
        "{0} is not set; production (the default CREWMESH_ENV) needs real keys: generate them \
         with `crewmesh keygen`, or set CREWMESH_ENV=development for the development keys"
    )]
    Missing(&'static str),
}

/// An Ed25519 private key: 32 secret bytes, redacted in `Debug`.
#[derive(Clone)]
pub struct SigningKey {
    seed: [u8; 32],
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([REDACTED])")
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let mut seed = [0u8; 32];
        aws_lc_rs::rand::fill(&mut seed).map_err(|_| KeyError::Invalid {
            name: "seed".into(),
            reason: "the system random generator failed".into(),
        })?;
        Ok(SigningKey { seed })
    }

    /// Parses the base64url (no padding) 32-byte seed.
    pub fn from_base64(name: &str, encoded: &str) -> Result<SigningKey, KeyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded.trim())
            .map_err(|e| KeyError::Invalid {
                name: name.to_owned(),
                reason: format!("not base64url: {e}"),
            })?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Invalid {
            name: name.to_owned(),
            reason: "an Ed25519 seed is 32 bytes".into(),
        })?;
        Ok(SigningKey { seed })
    }

    pub fn to_base64(&self) -> SecretString {
        SecretString::from(URL_SAFE_NO_PAD.encode(self.seed))
    }

    /// The well-known development key of a service. Never accepted in production.
    fn development(service: ServiceId) -> SigningKey {
        let label = format!("crewmesh development key (insecure): {}", service.as_str());
        let hash = digest::digest(&digest::SHA256, label.as_bytes());
        let mut seed = [0u8; 32];
        seed.copy_from_slice(hash.as_ref());
        SigningKey { seed }
    }

    fn key_pair(&self) -> Result<Ed25519KeyPair, KeyError> {
        Ed25519KeyPair::from_seed_unchecked(&self.seed).map_err(|_| KeyError::Invalid {
            name: "seed".into(),
            reason: "not a valid Ed25519 seed".into(),
        })
    }

    /// The public half, base64url without padding (the JWK `x` value).
    pub fn public_base64(&self) -> Result<String, KeyError> {
        Ok(URL_SAFE_NO_PAD.encode(self.key_pair()?.public_key().as_ref()))
    }

    fn encoding_key(&self) -> EncodingKey {
        // PKCS#8 v1 wrapping of a raw Ed25519 seed (RFC 8410 section 7).
        const PKCS8_PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut der = Vec::with_capacity(48);
        der.extend_from_slice(&PKCS8_PREFIX);
        der.extend_from_slice(&self.seed);
        EncodingKey::from_ed_der(&der)
    }
}

/// Signs tokens as one service.
#[derive(Clone)]
pub struct TokenSigner {
    service: ServiceId,
    key: Arc<EncodingKey>,
    cached: Arc<std::sync::RwLock<Option<(String, i64)>>>,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    pub fn new(service: ServiceId, key: &SigningKey) -> TokenSigner {
        TokenSigner {
            service,
            key: Arc::new(key.encoding_key()),
            cached: Arc::new(std::sync::RwLock::new(None)),
        }
    }

    pub fn service(&self) -> ServiceId {
        self.service
    }

    fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.service.as_str().to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(TokenError::Signing)
    }

    /// A user token valid for `ttl`; returns it with its expiry (Unix seconds).
    /// Verifiers accept it only when this signer is identity-svc.
    pub fn sign_user(&self, user: &UserClaims, ttl: Duration) -> Result<(String, i64), TokenError> {
        let now = chrono::Utc::now().timestamp();
        let exp = now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user.user_id.to_string(),
            iat: now,
            exp,
            jti: Uuid::now_v7(),
            tid: user.tenant_id,
            role: Some(user.role),
            act: user.impersonator,
            akid: user.api_key_id,
            svc: None,
        };
        Ok((self.sign(&claims)?, exp))
    }

    /// This service's own token, cached and re-minted at half its lifetime.
    pub fn service_token(&self) -> Result<String, TokenError> {
        let now = chrono::Utc::now().timestamp();
        let ttl = SERVICE_TOKEN_TTL.as_secs() as i64;
        if let Ok(cached) = self.cached.read()
            && let Some((token, exp)) = cached.as_ref()
            && *exp - now > ttl / 2
        {
            return Ok(token.clone());
        }
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: format!("service:{}", self.service.as_str()),
            iat: now,
            exp: now + ttl,
            jti: Uuid::now_v7(),
            tid: None,
            role: None,
            act: None,
            akid: None,
            svc: Some(self.service.as_str().to_owned()),
        };
        let token = self.sign(&claims)?;
        if let Ok(mut cached) = self.cached.write() {
            *cached = Some((token.clone(), claims.exp));
        }
        Ok(token)
    }
}

/// Verifies tokens with the public keys of the mesh.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Arc<HashMap<ServiceId, DecodingKey>>,
    validation: Arc<Validation>,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl TokenVerifier {
    /// `public_keys`: service → base64url Ed25519 public key.
    pub fn new(public_keys: &HashMap<ServiceId, String>) -> Result<TokenVerifier, KeyError> {
        let mut keys = HashMap::new();
        for (svc, encoded) in public_keys {
            let key = DecodingKey::from_ed_components(encoded).map_err(|e| KeyError::Invalid {
                name: format!("public key of {svc}"),
                reason: e.to_string(),
            })?;
            keys.insert(*svc, key);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        Ok(TokenVerifier {
            keys: Arc::new(keys),
            validation: Arc::new(validation),
        })
    }

    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let signer = header
            .kid
            .as_deref()
            .and_then(ServiceId::parse)
            .ok_or(TokenError::UnknownKey)?;
        let key = self.keys.get(&signer).ok_or(TokenError::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(TokenError::Invalid)?
            .claims;
        match claims.svc.as_deref() {
            Some(svc) => {
                if ServiceId::parse(svc) != Some(signer) || claims.role.is_some() {
                    return Err(TokenError::WrongIssuer);
                }
                Ok(Caller::Service(signer))
            }
            None => {
                if signer != ServiceId::Identity {
                    return Err(TokenError::WrongIssuer);
                }
                let user_id = claims.sub.parse().map_err(|_| TokenError::Malformed)?;
                let role = claims.role.ok_or(TokenError::Malformed)?;
                if role != Role::PlatformAdmin && claims.tid.is_none() {
                    return Err(TokenError::Malformed);
                }
                Ok(Caller::User(UserCaller {
                    user_id,
                    tenant_id: claims.tid,
                    role,
                    impersonator: claims.act,
                    api_key_id: claims.akid,
                }))
            }
        }
    }
}

/// A service's signing key plus the public keys of the whole mesh.
#[derive(Debug, Clone)]
pub struct Keyring {
    pub signer: TokenSigner,
    pub verifier: TokenVerifier,
}

pub const SIGNING_KEY_ENV: &str = "CREWMESH_TOKEN_SIGNING_KEY";
pub const PUBLIC_KEYS_ENV: &str = "CREWMESH_TOKEN_PUBLIC_KEYS";

impl Keyring {
    /// The development keyring: well-known keys, refused in production.
    pub fn development(service: ServiceId) -> Result<Keyring, KeyError> {
        let mut public = HashMap::new();
        for svc in ServiceId::ALL {
            public.insert(svc, SigningKey::development(svc).public_base64()?);
        }
        Ok(Keyring {
            signer: TokenSigner::new(service, &SigningKey::development(service)),
            verifier: TokenVerifier::new(&public)?,
        })
    }

    /// From `CREWMESH_TOKEN_SIGNING_KEY` (this service's seed) and
    /// `CREWMESH_TOKEN_PUBLIC_KEYS` (`service=key,…`); the development
    /// keyring when both are unset outside production.
    pub fn from_env(service: ServiceId, environment: Environment) -> Result<Keyring, KeyError> {
        let seed = crate::config::secret_var(SIGNING_KEY_ENV);
        let public = crate::config::var(PUBLIC_KEYS_ENV);
        match (seed, public) {
            (None, None) if environment == Environment::Development => {
                Keyring::development(service)
            }
            (None, _) => Err(KeyError::Missing(SIGNING_KEY_ENV)),
            (_, None) => Err(KeyError::Missing(PUBLIC_KEYS_ENV)),
            (Some(seed), Some(public)) => {
                let key = SigningKey::from_base64(SIGNING_KEY_ENV, seed.expose_secret())?;
                let public = parse_public_keys(&public)?;
                Ok(Keyring {
                    signer: TokenSigner::new(service, &key),
                    verifier: TokenVerifier::new(&public)?,
                })
            }
        }
    }
}

fn parse_public_keys(spec: &str) -> Result<HashMap<ServiceId, String>, KeyError> {
    let mut keys = HashMap::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, key) = entry.split_once('=').ok_or_else(|| KeyError::Invalid {
            name: PUBLIC_KEYS_ENV.into(),
            reason: format!("`{entry}` is not service=key"),
        })?;
        let svc = ServiceId::parse(name.trim()).ok_or_else(|| KeyError::Invalid {
            name: PUBLIC_KEYS_ENV.into(),
            reason: format!("unknown service `{name}`"),
        })?;
        keys.insert(svc, key.trim().to_owned());
    }
    if !keys.contains_key(&ServiceId::Identity) {
        return Err(KeyError::Invalid {
            name: PUBLIC_KEYS_ENV.into(),
            reason: "identity-svc's key is required to verify user tokens".into(),
        });
    }
    Ok(keys)
}

/// The bearer token of an `authorization` value, if it is one.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role, tenant: Option<Uuid>) -> UserClaims {
        UserClaims {
            user_id: Uuid::now_v7(),
            tenant_id: tenant,
            role,
            impersonator: None,
            api_key_id: None,
        }
    }

    #[test]
    fn a_user_token_from_identity_round_trips() {
        let identity = Keyring::development(ServiceId::Identity).unwrap();
        let gateway = Keyring::development(ServiceId::Gateway).unwrap();
        let tenant = Uuid::now_v7();
        let mut claims = user(Role::Operator, Some(tenant));
        claims.impersonator = Some(Uuid::now_v7());
        let (token, _) = identity
            .signer
            .sign_user(&claims, Duration::from_secs(60))
            .unwrap();
        let caller = gateway.verifier.verify(&token).unwrap();
        assert_eq!(
            caller,
            Caller::User(UserCaller {
                user_id: claims.user_id,
                tenant_id: Some(tenant),
                role: Role::Operator,
                impersonator: claims.impersonator,
                api_key_id: None,
            })
        );
    }

    #[test]
    fn only_identity_may_sign_user_tokens() {
        let llm = Keyring::development(ServiceId::Llm).unwrap();
        let (token, _) = llm
            .signer
            .sign_user(&user(Role::PlatformAdmin, None), Duration::from_secs(60))
            .unwrap();
        assert!(matches!(
            llm.verifier.verify(&token),
            Err(TokenError::WrongIssuer)
        ));
    }

    #[test]
    fn service_tokens_name_their_signer() {
        let billing = Keyring::development(ServiceId::Billing).unwrap();
        let token = billing.signer.service_token().unwrap();
        assert_eq!(
            billing.verifier.verify(&token).unwrap(),
            Caller::Service(ServiceId::Billing)
        );
        // Cached: the same token comes back while it is fresh.
        assert_eq!(billing.signer.service_token().unwrap(), token);
    }

    #[test]
    fn expired_tampered_and_foreign_tokens_are_refused() {
        let identity = Keyring::development(ServiceId::Identity).unwrap();
        let now = chrono::Utc::now().timestamp();
        let expired = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: Uuid::now_v7().to_string(),
            iat: now - 600,
            // Past the leeway granted for clock skew.
            exp: now - (LEEWAY_SECS as i64) - 1,
            jti: Uuid::now_v7(),
            tid: None,
            role: Some(Role::PlatformAdmin),
            act: None,
            akid: None,
            svc: None,
        };
        let token = identity.signer.sign(&expired).unwrap();
        assert!(matches!(
            identity.verifier.verify(&token),
            Err(TokenError::Invalid(_))
        ));

        let (token, _) = identity
            .signer
            .sign_user(&user(Role::PlatformAdmin, None), Duration::from_secs(60))
            .unwrap();
        assert!(identity.verifier.verify(&token).is_ok());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1].insert(0, 'e');
        assert!(identity.verifier.verify(&parts.join(".")).is_err());

        let stranger = SigningKey::generate().unwrap();
        let (foreign, _) = TokenSigner::new(ServiceId::Identity, &stranger)
            .sign_user(&user(Role::PlatformAdmin, None), Duration::from_secs(60))
            .unwrap();
        assert!(matches!(
            identity.verifier.verify(&foreign),
            Err(TokenError::Invalid(_))
        ));
        assert!(identity.verifier.verify("not-a-token").is_err());
    }

    #[test]
    fn tenant_users_must_carry_a_tenant() {
        let identity = Keyring::development(ServiceId::Identity).unwrap();
        let (token, _) = identity
            .signer
            .sign_user(&user(Role::Operator, None), Duration::from_secs(60))
            .unwrap();
        assert!(matches!(
            identity.verifier.verify(&token),
            Err(TokenError::Malformed)
        ));
    }

    #[test]
    fn tenant_users_cannot_name_another_tenant() {
        let own = Uuid::now_v7();
        let other = Uuid::now_v7();
        let admin = UserCaller {
            user_id: Uuid::now_v7(),
            tenant_id: Some(own),
            role: Role::CustomerAdmin,
            impersonator: None,
            api_key_id: None,
        };
        assert_eq!(admin.tenant_scope(None).unwrap(), own);
        assert_eq!(admin.tenant_scope(Some(own)).unwrap(), own);
        let err = admin.tenant_scope(Some(other)).unwrap_err();
        assert_eq!(ErrorCode::of_status(&err), ErrorCode::NotFound);

        let platform = UserCaller {
            tenant_id: None,
            role: Role::PlatformAdmin,
            ..admin
        };
        assert_eq!(platform.tenant_scope(Some(other)).unwrap(), other);
        assert!(platform.tenant_scope(None).is_err());
    }

    #[test]
    fn public_key_lists_parse_and_require_identity() {
        let key = SigningKey::generate().unwrap().public_base64().unwrap();
        let parsed = parse_public_keys(&format!("identity-svc={key}, gateway={key}")).unwrap();
        assert_eq!(parsed.len(), 2);
        assert!(parse_public_keys(&format!("gateway={key}")).is_err());
        assert!(parse_public_keys("nobody=abc,identity-svc=x").is_err());
    }

    #[test]
    fn bearer_values_parse() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
