//! A workload-identity issuer for tests: a key pair of its own (never the client's), which
//! signs JWTs the way a Kubernetes API server or a SPIFFE agent signs a projected token, and a
//! verifier that checks them as an identity provider trusting that issuer does. Plus a
//! directory for the files a platform would mount.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

/// An issuer of workload tokens with its own P-256 key.
#[derive(Clone)]
pub struct Issuer {
    pub iss: String,
    encoding: EncodingKey,
    public_pem: String,
}

impl Issuer {
    pub fn new(iss: &str) -> Issuer {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Issuer {
            iss: iss.to_owned(),
            encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            public_pem: pair.public_key_pem(),
        }
    }

    /// A token for `sub` and `aud`, valid from now for `lifetime_s` seconds (negative: expired),
    /// with `extra` claims merged in.
    pub fn token(&self, sub: &str, aud: &str, lifetime_s: i64, extra: Value) -> String {
        let now = now();
        let mut claims = json!({
            "iss": self.iss,
            "sub": sub,
            "aud": aud,
            "iat": now,
            "nbf": now,
            "exp": (now as i64 + lifetime_s).max(0),
            "jti": format!("jti-{}", NEXT.fetch_add(1, Ordering::SeqCst)),
        });
        if let (Value::Object(claims), Value::Object(extra)) = (&mut claims, extra) {
            claims.extend(extra);
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("issuer-key-1".into());
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }

    /// The claims of `jwt` if this issuer signed it for `aud` and it has not expired.
    pub fn verify(&self, jwt: &str, aud: &str) -> Option<Value> {
        let key = DecodingKey::from_ec_pem(self.public_pem.as_bytes()).unwrap();
        let mut rules = Validation::new(Algorithm::ES256);
        rules.set_audience(&[aud]);
        rules.set_issuer(&[&self.iss]);
        rules.leeway = 0;
        jsonwebtoken::decode::<Value>(jwt, &key, &rules)
            .ok()
            .map(|data| data.claims)
    }

    /// `verify` as a closure, for `TokenServerBuilder::client_assertions`.
    pub fn verifier(&self, aud: &str) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        let issuer = self.clone();
        let aud = aud.to_owned();
        move |jwt| issuer.verify(jwt, &aud).is_some()
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(1);

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A directory of its own under the system's temporary directory, removed when dropped.
pub struct Mounted {
    dir: PathBuf,
}

impl Mounted {
    pub fn new() -> Mounted {
        let dir = std::env::temp_dir().join(format!(
            "tower-oauth2-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Mounted { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Write `content` to `name` as the kubelet does: a new file renamed over the old one.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        let staged = self.dir.join(format!(".{name}.staged"));
        std::fs::write(&staged, content).unwrap();
        std::fs::rename(&staged, &path).unwrap();
        path
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
