//! Memory that holds a credential and is wiped when freed: `Bytes` and `HeaderValue`s over a
//! zeroizing buffer, and buffers sized so that they never reallocate (a reallocation frees the
//! old copy unwiped).

use bytes::Bytes;
use http::HeaderValue;
use zeroize::Zeroizing;

/// `bytes` as `Bytes`, wiped when the last clone drops.
pub(crate) fn bytes(bytes: Zeroizing<Vec<u8>>) -> Bytes {
    Bytes::from_owner(ZeroizeOnDrop(bytes))
}

/// A sensitive header over `bytes`, whose memory is wiped when the last clone drops.
pub(crate) fn sensitive_header(bytes: Zeroizing<Vec<u8>>) -> Option<HeaderValue> {
    let mut header = HeaderValue::from_maybe_shared(self::bytes(bytes)).ok()?;
    header.set_sensitive(true);
    Some(header)
}

/// The concatenation of `parts` in one buffer allocated once at its final size.
pub(crate) fn concat(parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let mut joined = Zeroizing::new(Vec::with_capacity(parts.iter().map(|p| p.len()).sum()));
    for part in parts {
        joined.extend_from_slice(part);
    }
    joined
}

/// The owner of a buffer's bytes: wipes them when the last `Bytes` pointing at them drops.
struct ZeroizeOnDrop(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for ZeroizeOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}
