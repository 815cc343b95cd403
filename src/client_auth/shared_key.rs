//! What the shared cache takes from a [`ClientAuth`]: the material its encryption key is
//! derived from, the fingerprint that keeps entries of different credentials apart, and what
//! tells one client's tokens from another's. Compiled with `shared-cache` only.

use zeroize::Zeroizing;

use super::ClientAuth;
#[cfg(feature = "rustls-no-provider")]
use super::Method;

impl ClientAuth {
    /// What only this client holds, to derive the shared cache's encryption key from: the
    /// secret, else the private key of its assertion or of its TLS certificate.
    pub(crate) fn key_material(&self) -> Option<Zeroizing<Vec<u8>>> {
        if let Some(secret) = self.secret() {
            return Some(Zeroizing::new(secret.as_bytes().to_vec()));
        }
        // Read from elsewhere, it rotates; held elsewhere, it is out of reach: the key must
        // be given (`shared_cache_key`).
        if self.reads_elsewhere() {
            return None;
        }
        #[cfg(feature = "rustls-no-provider")]
        if let Method::Signer { .. } = &self.method {
            return None;
        }
        #[cfg(feature = "rustls-no-provider")]
        if let Method::PrivateKeyJwt { key } = &self.method {
            return Some(key.key_material());
        }
        self.certificate
            .as_ref()
            .map(|identity| identity.key_pem.clone())
    }

    /// A fingerprint of every credential this client's tokens are issued to or bound to (the
    /// secret, the assertion's private key, the TLS certificate and its key), for the shared
    /// cache's entry key: instances holding different ones share no entry, so none waits on
    /// another's lease for a value it cannot open, and no certificate-bound token (RFC 8705
    /// §3) reaches an instance with another certificate. A one-way hash, no weaker than the
    /// sealed values themselves, which are keyed by the same material.
    pub(crate) fn key_fingerprint(&self) -> [u8; 32] {
        let mut parts: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        parts.push(Zeroizing::new(
            self.secret().unwrap_or_default().as_bytes().to_vec(),
        ));
        #[cfg(feature = "rustls-no-provider")]
        if let Method::PrivateKeyJwt { key } = &self.method {
            parts.push(key.key_material());
        }
        if let Some(identity) = &self.certificate {
            parts.push(Zeroizing::new(identity.chain_pem.clone()));
            parts.push(identity.key_pem.clone());
        }
        let lengths: Vec<[u8; 8]> = parts
            .iter()
            .map(|part| (part.len() as u64).to_be_bytes())
            .collect();
        let mut framed: Vec<&[u8]> = vec![b"tower-oauth2 shared entry key material v1"];
        for (part, length) in parts.iter().zip(&lengths) {
            framed.push(length);
            framed.push(part);
        }
        crate::crypto::sha256(&framed)
    }

    /// What distinguishes this client's tokens from another's, for the shared cache's entry
    /// key: nothing secret.
    pub(crate) fn identity(&self) -> [&str; 2] {
        [
            self.client_id.as_str(),
            self.method_name().unwrap_or("json"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_fingerprint_tells_every_credential_apart() {
        let tls = |chain: &str, key: &str| ClientAuth::tls("pod", chain, key).key_fingerprint();
        assert_eq!(tls("cert-a", "key-a"), tls("cert-a", "key-a"));
        // A renewed certificate over the same key binds tokens to another thumbprint.
        assert_ne!(tls("cert-a", "key-a"), tls("cert-b", "key-a"));
        assert_ne!(tls("cert-a", "key-a"), tls("cert-a", "key-b"));

        let basic = |secret: &str| ClientAuth::basic("pod", secret);
        assert_eq!(basic("s1").key_fingerprint(), basic("s1").key_fingerprint());
        assert_ne!(basic("s1").key_fingerprint(), basic("s2").key_fingerprint());
        assert_ne!(
            basic("s1").key_fingerprint(),
            basic("s1")
                .with_certificate("cert-a", "key-a")
                .key_fingerprint(),
            "certificate-bound tokens never share an entry with unbound ones"
        );
    }
}
