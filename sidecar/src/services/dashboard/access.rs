//! Signing in to the dashboard: operator-minted links and sessions.
//!
//! **Links.** `POST /v1/admin/tenants/{id}/dashboard-link` mints a token
//! `<link id>.<expires>.<tenant, base64url>.<signature>`: a random 128-bit link id, the expiry
//! (Unix seconds), the tenant, and an HMAC-SHA256 over the three with the server's secret
//! (`TOLLGATE_DASHBOARD_SECRET`). The link id is also recorded in the database; exchanging
//! the token checks the signature and the expiry first (a forged or altered token never reaches
//! the database), then marks the link used in one statement, so exactly one exchange succeeds.
//!
//! **Sessions.** A sign-in (link, API key or admin token) creates a session: a random 256-bit
//! token sent to the browser as an HttpOnly cookie, of which only the SHA-256 is stored, with
//! its role (one tenant, or the operator) and expiry. The tenant a request reads comes from its
//! session and nothing else.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::services::registry::keys::sha256_hex;
use crate::storage::sql::dashboard::{DashboardStore, LinkUse, SessionRole};

type HmacSha256 = Hmac<Sha256>;

/// Why a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The link is malformed, altered, or signed with another secret.
    #[error("this sign-in link is not valid")]
    InvalidLink,
    /// The link's time is up.
    #[error("this sign-in link has expired; ask for a new one")]
    ExpiredLink,
    /// The link was used before.
    #[error("this sign-in link was used already; ask for a new one")]
    UsedLink,
    /// The operating system's random source failed.
    #[error("no random bytes available")]
    Random,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Signs and checks link tokens with the server's secret.
#[derive(Clone)]
pub struct LinkSigner {
    keyed: HmacSha256,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSigner(<secret>)")
    }
}

/// A verified link token's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkClaims {
    /// The link id (recorded in the database).
    pub link_id: String,
    /// Its tenant.
    pub tenant: String,
    /// Its expiry, Unix seconds.
    pub expires_at: u64,
}

impl LinkSigner {
    /// A signer over `secret` (at least 32 random bytes recommended; empty: refused).
    pub fn new(secret: &[u8]) -> Result<Self, AccessError> {
        if secret.is_empty() {
            return Err(AccessError::InvalidLink);
        }
        let keyed = HmacSha256::new_from_slice(secret).map_err(|_| AccessError::InvalidLink)?;
        Ok(LinkSigner { keyed })
    }

    /// A signer over 32 fresh random bytes (links die with the process).
    pub fn random() -> Result<Self, AccessError> {
        Self::new(&random::<32>()?)
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(payload.as_bytes());
        mac
    }

    /// The token of `claims`.
    pub fn sign(&self, claims: &LinkClaims) -> String {
        let payload = format!(
            "{}.{}.{}",
            claims.link_id,
            claims.expires_at,
            URL_SAFE_NO_PAD.encode(claims.tenant.as_bytes())
        );
        let signature = self.mac(&payload).finalize().into_bytes();
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// The claims of `token` if its signature is ours (compared in constant time) and it has
    /// not expired at `now`.
    pub fn verify(&self, token: &str, now: u64) -> Result<LinkClaims, AccessError> {
        let (payload, signature) = token.rsplit_once('.').ok_or(AccessError::InvalidLink)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AccessError::InvalidLink)?;
        self.mac(payload)
            .verify_slice(&signature)
            .map_err(|_| AccessError::InvalidLink)?;
        let mut parts = payload.splitn(3, '.');
        let (Some(link_id), Some(expires), Some(tenant)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(AccessError::InvalidLink);
        };
        let expires_at: u64 = expires.parse().map_err(|_| AccessError::InvalidLink)?;
        let tenant = URL_SAFE_NO_PAD
            .decode(tenant)
            .ok()
            .and_then(|t| String::from_utf8(t).ok())
            .ok_or(AccessError::InvalidLink)?;
        if now >= expires_at {
            return Err(AccessError::ExpiredLink);
        }
        Ok(LinkClaims {
            link_id: link_id.to_owned(),
            tenant,
            expires_at,
        })
    }
}

fn random<const N: usize>() -> Result<[u8; N], AccessError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| AccessError::Random)?;
    Ok(bytes)
}

/// Mints a link for `tenant`, live for `ttl_seconds` from `now`: records it and returns the
/// token and its expiry.
pub async fn mint_link(
    store: &impl DashboardStore,
    signer: &LinkSigner,
    tenant: &str,
    now: u64,
    ttl_seconds: u64,
) -> Result<(String, u64), AccessError> {
    let claims = LinkClaims {
        link_id: URL_SAFE_NO_PAD.encode(random::<16>()?),
        tenant: tenant.to_owned(),
        expires_at: now.saturating_add(ttl_seconds),
    };
    store
        .insert_link(&claims.link_id, tenant, now, claims.expires_at)
        .await?;
    Ok((signer.sign(&claims), claims.expires_at))
}

/// Uses the link `token` at `now`: its tenant, once.
pub async fn use_link(
    store: &impl DashboardStore,
    signer: &LinkSigner,
    token: &str,
    now: u64,
) -> Result<String, AccessError> {
    let claims = signer.verify(token, now)?;
    match store.use_link(&claims.link_id, now).await? {
        LinkUse::Signed(tenant) if tenant == claims.tenant => Ok(tenant),
        LinkUse::Signed(_) | LinkUse::Unknown => Err(AccessError::InvalidLink),
        LinkUse::AlreadyUsed => Err(AccessError::UsedLink),
        LinkUse::Expired => Err(AccessError::ExpiredLink),
    }
}

/// Starts a session for `role` until `now + ttl_seconds`: returns the cookie's token (only its
/// hash is stored). Ended sessions and old links are purged on the way.
pub async fn start_session(
    store: &impl DashboardStore,
    role: &SessionRole,
    now: u64,
    ttl_seconds: u64,
) -> Result<String, AccessError> {
    store.purge(now).await?;
    let token = format!("tgs_{}", URL_SAFE_NO_PAD.encode(random::<32>()?));
    store
        .insert_session(
            &sha256_hex(&token),
            role,
            now,
            now.saturating_add(ttl_seconds),
        )
        .await?;
    Ok(token)
}

/// Who the session `token` signs in, if it is live at `now`.
pub async fn session(
    store: &impl DashboardStore,
    token: &str,
    now: u64,
) -> Result<Option<SessionRole>, AccessError> {
    Ok(store
        .session(&sha256_hex(token), now)
        .await?
        .map(|s| s.role))
}

/// Ends the session `token`.
pub async fn end_session(store: &impl DashboardStore, token: &str) -> Result<(), AccessError> {
    store.delete_session(&sha256_hex(token)).await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn claims() -> LinkClaims {
        LinkClaims {
            link_id: "abc".into(),
            tenant: "acme.co/eu".into(),
            expires_at: 1_000,
        }
    }

    #[test]
    fn tokens_verify_only_unaltered_and_unexpired() {
        let signer = LinkSigner::new(b"secret one").unwrap();
        let token = signer.sign(&claims());
        assert_eq!(signer.verify(&token, 999).unwrap(), claims());
        assert!(matches!(
            signer.verify(&token, 1_000),
            Err(AccessError::ExpiredLink)
        ));
        // Another secret, another tenant, a later expiry, garbage: all refused.
        let other = LinkSigner::new(b"secret two").unwrap();
        assert!(matches!(
            other.verify(&token, 1),
            Err(AccessError::InvalidLink)
        ));
        let forged_tenant = token.replacen(
            &URL_SAFE_NO_PAD.encode("acme.co/eu"),
            &URL_SAFE_NO_PAD.encode("globex"),
            1,
        );
        assert_ne!(forged_tenant, token);
        assert!(matches!(
            signer.verify(&forged_tenant, 1),
            Err(AccessError::InvalidLink)
        ));
        let later = token.replacen(".1000.", ".9999.", 1);
        assert!(matches!(
            signer.verify(&later, 1),
            Err(AccessError::InvalidLink)
        ));
        assert!(LinkSigner::new(b"").is_err());
        for junk in ["", ".", "a.b.c.d", "abc.1000.YWNtZQ.", "no dots"] {
            assert!(matches!(
                signer.verify(junk, 1),
                Err(AccessError::InvalidLink)
            ));
        }
    }
}
