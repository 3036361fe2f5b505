//! Randomness for secrets and one-time values: session secrets and keys, state, nonce, PKCE,
//! logout ids, `jti`s. Always the operating system's generator.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

/// Random bytes from the OS. The OS RNG failing leaves no safe way to mint secrets, so it aborts
/// the request (Pingora catches the panic per request) rather than continuing with weak values.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if SystemRandom::new().fill(&mut buf).is_err() {
        panic!("the operating system's random number generator failed");
    }
    buf
}

/// A random token for URLs and records (state, nonce, logout id): base64url of `N` bytes.
pub fn random_token<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<N>())
}
