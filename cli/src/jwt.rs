//! A JWT's header and claims, decoded and **not verified**: what an operator reads to see which
//! audience, scopes and lifetime a provider put in a token. Never its signature.

use base64::Engine as _;
use serde_json::{Map, Value};

/// The header and claims of `token`, if it is a JWS in compact form (three base64url parts,
/// the first two JSON objects).
pub fn decode(token: &str) -> Option<(Map<String, Value>, Map<String, Value>)> {
    let mut parts = token.split('.');
    let (header, claims, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((object(header)?, object(claims)?))
}

fn object(part: &str) -> Option<Map<String, Value>> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(value: Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    }

    #[test]
    fn decodes_a_compact_jws_and_nothing_else() {
        let token = format!(
            "{}.{}.c2ln",
            part(serde_json::json!({"alg": "RS256", "kid": "k1"})),
            part(serde_json::json!({"aud": "api", "exp": 1}))
        );
        let (header, claims) = decode(&token).expect("a JWT");
        assert_eq!(header["kid"], "k1");
        assert_eq!(claims["aud"], "api");
        assert!(decode("token-1").is_none());
        assert!(decode("a.b.c").is_none());
        assert!(decode(&format!("{token}.more")).is_none());
    }
}
