//! The cookie secret and what is derived from it.
//!
//! The browser holds one 256-bit random secret. From it portcullis derives, with HMAC-SHA256
//! under distinct labels, a lookup id (the store key) and an AES-256-GCM key (the record's
//! encryption key). The store therefore holds only ciphertext under a one-way id: a dump of
//! Redis yields neither tokens nor a usable cookie, and no server-side key has to be configured.

use std::hash::BuildHasher;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use subtle::ConstantTimeEq;

use crate::random::random_bytes;

pub const SECRET_LEN: usize = 32;
/// base64url without padding of 32 bytes.
pub const ENCODED_SECRET_LEN: usize = 43;

/// 256 bits from the OS CSPRNG, as carried in a cookie. Never logged: `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct CookieSecret([u8; SECRET_LEN]);

impl std::fmt::Debug for CookieSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSecret(<redacted>)")
    }
}

impl CookieSecret {
    pub fn generate() -> CookieSecret {
        CookieSecret(random_bytes())
    }

    /// Accepts exactly the format portcullis mints; anything else is rejected before any
    /// store lookup.
    pub fn parse(value: impl AsRef<[u8]>) -> Option<CookieSecret> {
        let value = value.as_ref();
        if value.len() != ENCODED_SECRET_LEN {
            return None;
        }
        // The engine refuses set trailing bits, so one secret has one spelling. 43 characters
        // decode to at most 33 bytes by the engine's estimate; exactly 32 are expected.
        let mut buf = [0u8; SECRET_LEN + 1];
        let len = URL_SAFE_NO_PAD.decode_slice(value, &mut buf).ok()?;
        let arr: [u8; SECRET_LEN] = buf.get(..len)?.try_into().ok()?;
        Some(CookieSecret(arr))
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// A keyed hash of the secret, for finding it in a process-local map (see `keys`).
    pub fn fingerprint(&self, hasher: &impl BuildHasher) -> u64 {
        hasher.hash_one(self.0)
    }

    /// Compared a word at a time: as constant in time as byte by byte, with an eighth of the
    /// steps (every cached request compares one secret).
    pub fn equals_in_constant_time(&self, other: &CookieSecret) -> bool {
        bool::from(words(&self.0).ct_eq(&words(&other.0)))
    }

    /// The store id and record key for `purpose` (session, login transaction, …).
    pub fn derive(&self, purpose: &str) -> DerivedKeys {
        let mac_key = self.mac_key();
        let enc = hmac::sign(&mac_key, format!("portcullis/{purpose}/enc").as_bytes());
        let unbound =
            UnboundKey::new(&AES_256_GCM, enc.as_ref()).unwrap_or_else(|_| unreachable_key_len());
        DerivedKeys {
            id: Self::id_with(&mac_key, purpose),
            key: LessSafeKey::new(unbound),
        }
    }

    /// Only the store id for `purpose`: what a cached lookup needs, at half the cost of `derive`.
    pub fn derive_id(&self, purpose: &str) -> String {
        Self::id_with(&self.mac_key(), purpose)
    }

    fn mac_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }

    fn id_with(mac_key: &hmac::Key, purpose: &str) -> String {
        let id = hmac::sign(mac_key, format!("portcullis/{purpose}/id").as_bytes());
        // 128 bits are plenty for a lookup id and keep keys short.
        URL_SAFE_NO_PAD.encode(&id.as_ref()[..16])
    }
}

fn words(secret: &[u8; SECRET_LEN]) -> [u64; SECRET_LEN / 8] {
    let mut words = [0u64; SECRET_LEN / 8];
    for (word, bytes) in words.iter_mut().zip(secret.chunks_exact(8)) {
        let mut chunk = [0u8; 8];
        chunk.copy_from_slice(bytes);
        *word = u64::from_ne_bytes(chunk);
    }
    words
}

/// HMAC-SHA256 output is always 32 bytes, which is AES-256's key length.
fn unreachable_key_len() -> UnboundKey {
    panic!("HMAC-SHA256 output has the AES-256 key length")
}

pub struct DerivedKeys {
    pub id: String,
    key: LessSafeKey,
}

impl DerivedKeys {
    /// nonce ‖ ciphertext ‖ tag. The store key is the associated data, so a record copied to
    /// another key does not decrypt.
    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes: [u8; NONCE_LEN] = random_bytes();
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&nonce_bytes);
        let mut body = plaintext.to_vec();
        let nonce = Nonce::assume_unique_for_key(nonce_bytes);
        // Sealing fails only for inputs over ~64 GB; records are a few KB.
        if self
            .key
            .seal_in_place_append_tag(nonce, Aad::from(aad.as_bytes()), &mut body)
            .is_ok()
        {
            out.extend_from_slice(&body);
        }
        out
    }

    /// `None` for any failure (truncated, tampered, wrong key): callers see one generic error.
    pub fn open(&self, aad: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce_bytes, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce_bytes).ok()?;
        let mut buf = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_differing_in_any_byte_are_not_equal() {
        let s = CookieSecret::generate();
        assert!(s.equals_in_constant_time(&s.clone()));
        for i in 0..SECRET_LEN {
            let mut other = s.clone();
            other.0[i] ^= 0x01;
            assert!(!s.equals_in_constant_time(&other), "byte {i}");
        }
    }

    #[test]
    fn secrets_round_trip_and_are_43_url_safe_chars() {
        let s = CookieSecret::generate();
        let enc = s.encode();
        assert_eq!(enc.len(), ENCODED_SECRET_LEN);
        assert!(enc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(CookieSecret::parse(&enc), Some(s));
    }

    /// The base64url character with the same top four bits as `c` and a low bit set.
    fn non_canonical_last(c: u8) -> char {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = ALPHABET.iter().position(|&a| a == c).unwrap();
        ALPHABET[index | 1] as char
    }

    #[test]
    fn malformed_secrets_are_rejected() {
        let good = CookieSecret::generate().encode();
        for bad in [
            "".to_string(),
            "abc".to_string(),
            format!("{good}A"),
            good.replace(|c: char| c.is_ascii_alphanumeric(), "+"),
            format!("{}=", &good[..42]),
            // Same bytes, a different spelling: the last character's unused bits set.
            format!("{}{}", &good[..42], non_canonical_last(good.as_bytes()[42])),
            "\u{0}".repeat(43),
        ] {
            assert!(CookieSecret::parse(&bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sealed_records_open_only_with_the_same_secret_and_key() {
        let a = CookieSecret::generate().derive("session");
        let b = CookieSecret::generate().derive("session");
        let sealed = a.seal("k1", b"tokens");
        assert_eq!(a.open("k1", &sealed).as_deref(), Some(&b"tokens"[..]));
        assert!(a.open("k2", &sealed).is_none());
        assert!(b.open("k1", &sealed).is_none());
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(a.open("k1", &flipped).is_none());
        assert!(a.open("k1", &sealed[..10]).is_none());
    }

    #[test]
    fn purposes_derive_different_ids() {
        let s = CookieSecret::generate();
        assert_ne!(s.derive("session").id, s.derive("txn").id);
        assert_eq!(s.derive("session").id, s.derive("session").id);
        assert_eq!(s.derive("session").id, s.derive_id("session"));
    }
}
