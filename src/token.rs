//! [`AccessToken`]: the secret, its type, scope and expiry, with a `Debug` that never shows the secret.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// The longest lifetime a token is believed to have. Larger `expires_in` values are clamped to
/// it, so no expiry arithmetic can overflow whatever an endpoint sends.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// An OAuth 2.0 access token as issued by a token endpoint.
///
/// Cloning is cheap (one reference count). The secret is zeroized when the last clone is
/// dropped, and `Debug` prints `[redacted]` in its place.
///
/// ```
/// use std::time::Duration;
/// use tower_oauth2::AccessToken;
///
/// let token = AccessToken::new("s3cr3t").with_lifetime(Duration::from_secs(3600));
/// assert_eq!(token.secret(), "s3cr3t");
/// assert_eq!(token.token_type(), "Bearer");
/// assert!(!format!("{token:?}").contains("s3cr3t"));
/// ```
#[derive(Clone)]
pub struct AccessToken {
    inner: Arc<Inner>,
    /// Where it came from: an endpoint (its expiry as stated), or a cache (until when that
    /// cache uses it), so that another cache in front never stretches it past that.
    origin: Origin,
}

#[derive(Clone, Copy)]
enum Origin {
    Fresh,
    Relayed { until: Option<Instant> },
}

struct Inner {
    secret: Zeroizing<String>,
    expires_at: Option<Instant>,
    scope: Option<String>,
    /// RFC 8693 `issued_token_type`, from a token exchange.
    issued_token_type: Option<String>,
    /// The key a DPoP token is bound to (RFC 9449): it is only ever sent with a proof by it.
    dpop: Option<crate::dpop::Bound>,
}

impl AccessToken {
    /// A bearer token that never expires (until a server rejects it).
    pub fn new(secret: impl Into<String>) -> Self {
        AccessToken {
            inner: Arc::new(Inner {
                secret: Zeroizing::new(secret.into()),
                expires_at: None,
                scope: None,
                issued_token_type: None,
                dpop: None,
            }),
            origin: Origin::Fresh,
        }
    }

    /// The same token, expiring `lifetime` from now (clamped to ten years).
    ///
    /// "Now" is tokio's clock, so tests that pause time see consistent expiries.
    pub fn with_lifetime(self, lifetime: Duration) -> Self {
        self.with_expires_at(Some(expiry_from_now(lifetime)))
    }

    /// The same token, expiring at `expires_at` (`None`: never).
    pub fn with_expires_at(self, expires_at: Option<Instant>) -> Self {
        let mut token = self.map(|inner| inner.expires_at = expires_at);
        token.origin = Origin::Fresh;
        token
    }

    /// The same token, carrying the scope the server granted.
    pub fn with_scope(self, scope: impl Into<String>) -> Self {
        let scope = scope.into();
        self.map(|inner| inner.scope = Some(scope))
    }

    /// The same token, carrying the `issued_token_type` a token exchange reported (RFC 8693
    /// §2.2.1).
    pub fn with_issued_token_type(self, token_type: impl Into<String>) -> Self {
        let token_type = token_type.into();
        self.map(|inner| inner.issued_token_type = Some(token_type))
    }

    /// What a token exchange says it issued (RFC 8693 §2.2.1 `issued_token_type`, e.g.
    /// `urn:ietf:params:oauth:token-type:access_token`); `None` for other grants. Compare it
    /// with [`TokenType::uri`](crate::token_exchange::TokenType::uri).
    pub fn issued_token_type(&self) -> Option<&str> {
        self.inner.issued_token_type.as_deref()
    }

    /// The same token, bound to a DPoP key: sent only as `DPoP`, with a proof by that key.
    pub(crate) fn with_dpop(self, key: crate::dpop::Bound) -> Self {
        self.map(|inner| inner.dpop = Some(key))
    }

    /// The key a DPoP token is bound to; `None` for a bearer token.
    pub(crate) fn dpop(&self) -> Option<&crate::dpop::Bound> {
        self.inner.dpop.as_ref()
    }

    fn map(self, change: impl FnOnce(&mut Inner)) -> Self {
        let origin = self.origin;
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => Inner {
                secret: shared.secret.clone(),
                expires_at: shared.expires_at,
                scope: shared.scope.clone(),
                issued_token_type: shared.issued_token_type.clone(),
                dpop: shared.dpop.clone(),
            },
        };
        change(&mut inner);
        AccessToken {
            inner: Arc::new(inner),
            origin,
        }
    }

    /// The token itself, as sent after `Bearer `. Handle with care: this is a credential.
    pub fn secret(&self) -> &str {
        &self.inner.secret
    }

    /// `"DPoP"` for a token bound to a [`DpopKey`](crate::dpop::DpopKey) (RFC 9449), sent with
    /// a proof by that key; otherwise `"Bearer"`.
    pub fn token_type(&self) -> &str {
        match self.inner.dpop {
            Some(_) => "DPoP",
            None => "Bearer",
        }
    }

    /// When the token stops being valid, if the server said (`expires_in`) or a default applied.
    pub fn expires_at(&self) -> Option<Instant> {
        self.inner.expires_at
    }

    /// Until when it may be used: its expiry, or for a token a cache handed out, when that
    /// cache stops using it (which may be before the expiry, or after it for a token shorter
    /// than `CachePolicy::min_lifetime`).
    pub(crate) fn usable_until(&self) -> Option<Instant> {
        match self.origin {
            Origin::Fresh => self.inner.expires_at,
            Origin::Relayed { until } => until,
        }
    }

    /// The scope the server granted, if it said.
    pub fn scope(&self) -> Option<&str> {
        self.inner.scope.as_deref()
    }

    /// Whether two handles are clones of the same issued token.
    pub(crate) fn same_as(&self, other: &AccessToken) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// This token as a cache hands it out: expiring when that cache stops using it (`until`),
    /// which a cache in front takes as it is.
    pub(crate) fn relayed(&self, until: Option<Instant>) -> AccessToken {
        AccessToken {
            inner: self.inner.clone(),
            origin: Origin::Relayed { until },
        }
    }

    /// Whether a cache handed it out (see [`relayed`](Self::relayed)).
    pub(crate) fn is_relayed(&self) -> bool {
        matches!(self.origin, Origin::Relayed { .. })
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"[redacted]")
            .field("token_type", &self.token_type())
            .field("expires_at", &self.inner.expires_at)
            .field("scope", &self.inner.scope)
            .finish()
    }
}

/// Tokio's notion of now, so paused test time and real time agree.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

pub(crate) fn expiry_from_now(lifetime: Duration) -> Instant {
    let now = now();
    let lifetime = lifetime.min(MAX_LIFETIME);
    now.checked_add(lifetime).unwrap_or(now)
}
