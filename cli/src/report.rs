//! What `tower-oauth2 token` prints about a token: everything but the token.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tower_oauth2::AccessToken;

pub struct Report {
    endpoint: String,
    token_type: String,
    /// What a token exchange says it issued (RFC 8693 `issued_token_type`).
    issued_token_type: Option<String>,
    /// How long it is valid from now, and when that is (seconds since 1970), if it expires.
    expiry: Option<(Duration, u64)>,
    scope: Option<String>,
    /// A JWT's header and claims, not verified.
    jwt: Option<(Map<String, Value>, Map<String, Value>)>,
}

impl Report {
    pub fn new(endpoint: &str, token: &AccessToken) -> Self {
        let expiry = token.expires_at().map(|at| {
            let left = at.saturating_duration_since(Instant::now());
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            (left, (now + left).as_secs())
        });
        Report {
            endpoint: endpoint.to_owned(),
            token_type: token.token_type().to_owned(),
            issued_token_type: token.issued_token_type().map(str::to_owned),
            expiry,
            scope: token.scope().map(str::to_owned),
            jwt: crate::jwt::decode(token.secret()),
        }
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "endpoint:    {}", self.endpoint);
        let _ = writeln!(out, "token type:  {}", self.token_type);
        if let Some(issued) = &self.issued_token_type {
            let _ = writeln!(out, "issued type: {issued}");
        }
        match self.expiry {
            Some((left, at)) => {
                let _ = writeln!(out, "expires in:  {} s (at {})", left.as_secs(), utc(at));
            }
            None => {
                let _ = writeln!(out, "expires in:  not said (no expires_in)");
            }
        }
        let _ = writeln!(
            out,
            "scope:       {}",
            self.scope.as_deref().unwrap_or("(not in the response)")
        );
        match &self.jwt {
            Some((header, claims)) => {
                let pretty = |map: &Map<String, Value>| {
                    serde_json::to_string_pretty(map).unwrap_or_default()
                };
                let _ = writeln!(out, "JWT header (not verified):\n{}", pretty(header));
                let _ = writeln!(out, "JWT claims (not verified):\n{}", pretty(claims));
            }
            None => {
                let _ = writeln!(out, "format:      opaque (not a JWT)");
            }
        }
        out
    }

    pub fn json(&self) -> Value {
        let jwt = self.jwt.as_ref().map(
            |(header, claims)| json!({ "verified": false, "header": header, "claims": claims }),
        );
        json!({
            "endpoint": self.endpoint,
            "token_type": self.token_type,
            "issued_token_type": self.issued_token_type,
            "expires_in": self.expiry.map(|(left, _)| left.as_secs()),
            "expires_at": self.expiry.map(|(_, at)| utc(at)),
            "scope": self.scope,
            "jwt": jwt,
        })
    }
}

/// `seconds` since 1970 as RFC 3339 UTC, e.g. `2026-12-07T05:00:00Z`.
fn utc(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_796_619_600), "2026-12-07T05:00:00Z");
    }
}
