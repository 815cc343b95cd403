//! A DPoP proof verifier that checks like a real server (RFC 9449 §4.3): the JWS signature
//! with the key embedded in its `jwk` header (verified by `jsonwebtoken`, not the crate),
//! `typ`, `htm`, `htu`, an `iat` window, a `jti` never seen before, `ath` and `nonce`; and the
//! key's RFC 7638 thumbprint, computed here from the JWK members.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// How far `iat` may be from now, in seconds.
pub const IAT_WINDOW: u64 = 60;

/// What one request must match.
pub struct Expect<'a> {
    pub htm: &'a str,
    pub htu: &'a str,
    /// The access token the proof must cover (`ath`), on a resource request.
    pub token: Option<&'a str>,
    /// The nonce the proof must carry.
    pub nonce: Option<&'a str>,
}

/// A proof that passed: its key's thumbprint and its claims.
#[derive(Debug, Clone)]
pub struct Checked {
    pub jkt: String,
    pub claims: Value,
}

/// Remembers every `jti` it accepted, so a replayed proof is refused.
#[derive(Default)]
pub struct ProofChecker {
    seen: Mutex<HashSet<String>>,
}

fn part(jwt: &str, index: usize) -> Result<Value, String> {
    let text = jwt.split('.').nth(index).ok_or("not a JWS")?;
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

fn text<'a>(value: &'a Value, name: &str) -> Result<&'a str, String> {
    value
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no {name}"))
}

/// base64url SHA-256.
pub fn sha256_b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

/// RFC 7638: the required members in lexicographic order, no whitespace, hashed.
pub fn thumbprint(jwk: &Value) -> Result<String, String> {
    let canonical = match text(jwk, "kty")? {
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            text(jwk, "crv")?,
            text(jwk, "x")?,
            text(jwk, "y")?
        ),
        "OKP" => format!(
            r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
            text(jwk, "crv")?,
            text(jwk, "x")?
        ),
        other => return Err(format!("kty {other}")),
    };
    Ok(sha256_b64(canonical.as_bytes()))
}

impl ProofChecker {
    pub fn check(&self, proof: &str, expect: &Expect<'_>) -> Result<Checked, String> {
        let header = part(proof, 0)?;
        if text(&header, "typ")? != "dpop+jwt" {
            return Err("typ is not dpop+jwt".into());
        }
        let alg = match text(&header, "alg")? {
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "EdDSA" => Algorithm::EdDSA,
            other => return Err(format!("alg {other}")),
        };
        let jwk = header.get("jwk").ok_or("no jwk")?;
        if jwk.get("d").is_some() {
            return Err("the jwk holds a private key".into());
        }
        let key = match text(jwk, "kty")? {
            "EC" => DecodingKey::from_ec_components(text(jwk, "x")?, text(jwk, "y")?),
            "OKP" => DecodingKey::from_ed_components(text(jwk, "x")?),
            other => return Err(format!("kty {other}")),
        }
        .map_err(|e| e.to_string())?;
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Value>(proof, &key, &validation)
            .map_err(|e| format!("signature: {e}"))?
            .claims;
        if text(&claims, "htm")? != expect.htm {
            return Err(format!(
                "htm {} for a {} request",
                claims["htm"], expect.htm
            ));
        }
        if text(&claims, "htu")? != expect.htu {
            return Err(format!("htu {} for {}", claims["htu"], expect.htu));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let iat = claims.get("iat").and_then(Value::as_u64).ok_or("no iat")?;
        if iat.abs_diff(now) > IAT_WINDOW {
            return Err(format!("iat {iat} is not within {IAT_WINDOW}s of {now}"));
        }
        match (expect.token, claims.get("ath").and_then(Value::as_str)) {
            (Some(token), Some(ath)) if ath == sha256_b64(token.as_bytes()) => {}
            (Some(_), _) => return Err("ath does not match the token".into()),
            (None, Some(_)) => return Err("ath on a token request".into()),
            (None, None) => {}
        }
        if let Some(nonce) = expect.nonce {
            if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
                return Err("use_dpop_nonce".into());
            }
        }
        let jti = text(&claims, "jti")?.to_owned();
        if !self.seen.lock().unwrap().insert(jti) {
            return Err("replayed jti".into());
        }
        Ok(Checked {
            jkt: thumbprint(jwk)?,
            claims,
        })
    }
}
