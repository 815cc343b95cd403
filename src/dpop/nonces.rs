//! The nonces servers asked for (RFC 9449 §8, §9), per origin: read on every proof without a
//! lock, replaced whole when a server sends a new one, bounded.

use arc_swap::ArcSwap;
use http::HeaderValue;

/// How many origins' nonces a key remembers; the least recently given one is forgotten first
/// (and costs one retry when asked for again).
pub const MAX_ORIGINS: usize = 32;

/// The longest nonce kept: longer ones are ignored (a server's nonce is short).
const MAX_NONCE_LEN: usize = 1024;

/// Nonces by origin (`scheme://host:port`), most recent last.
#[derive(Default)]
pub(crate) struct Nonces {
    by_origin: ArcSwap<Vec<(Box<str>, Box<str>)>>,
}

/// Whether `nonce` is one RFC 9449 allows (`NQCHAR`: printable ASCII but `"` and `\`), and
/// short enough to keep.
pub(crate) fn acceptable(nonce: &HeaderValue) -> bool {
    let bytes = nonce.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NONCE_LEN
        && bytes
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

impl Nonces {
    /// The nonce to put in proofs to `origin`, if a server gave one.
    // Read by proofs, which need a crypto provider.
    #[cfg_attr(not(feature = "rustls-no-provider"), allow(dead_code))]
    pub(crate) fn for_origin(&self, origin: &str) -> Option<String> {
        let all = self.by_origin.load();
        all.iter()
            .find(|(o, _)| &**o == origin)
            .map(|(_, nonce)| nonce.to_string())
    }

    /// `origin` asked for `nonce` (already [`acceptable`]).
    pub(crate) fn remember(&self, origin: &str, nonce: &HeaderValue) {
        let Ok(nonce) = nonce.to_str() else { return };
        let known = self
            .by_origin
            .load()
            .iter()
            .any(|(o, n)| &**o == origin && &**n == nonce);
        if known {
            // The usual case: servers repeat their nonce on every answer.
            return;
        }
        self.by_origin.rcu(|current| {
            let mut next: Vec<(Box<str>, Box<str>)> = current
                .iter()
                .filter(|(o, _)| &**o != origin)
                .cloned()
                .collect();
            if next.len() >= MAX_ORIGINS {
                next.remove(0);
            }
            next.push((origin.into(), nonce.into()));
            next
        });
    }

    /// How many origins are remembered, for tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_origin.load().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_kept_per_origin_and_bounded() {
        let nonces = Nonces::default();
        for i in 0..(MAX_ORIGINS + 5) {
            nonces.remember(
                &format!("https://h{i}"),
                &HeaderValue::from_str(&format!("n{i}")).unwrap(),
            );
        }
        assert_eq!(nonces.len(), MAX_ORIGINS);
        assert_eq!(nonces.for_origin("https://h0"), None);
        let last = MAX_ORIGINS + 4;
        assert_eq!(
            nonces.for_origin(&format!("https://h{last}")),
            Some(format!("n{last}"))
        );
        nonces.remember("https://h10", &HeaderValue::from_static("again"));
        assert_eq!(nonces.for_origin("https://h10").as_deref(), Some("again"));
        assert_eq!(nonces.len(), MAX_ORIGINS);
    }

    #[test]
    fn nonces_with_quotes_or_controls_are_refused() {
        assert!(acceptable(&HeaderValue::from_static("abc-123_~")));
        assert!(!acceptable(&HeaderValue::from_static("a\"b")));
        assert!(!acceptable(&HeaderValue::from_static("a b")));
        assert!(!acceptable(&HeaderValue::from_static("")));
    }
}
