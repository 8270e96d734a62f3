//! Arbitrary bytes as a zstd body through the receive path's inflate
//! (`compression::inflate_body`), with a small limit: any input gives a body of at most the
//! limit or a typed error, never a panic, and a refusal names the limit it was held to.
#![no_main]

use getty_rpc::compression::{InflateError, inflate_body};
use libfuzzer_sys::fuzz_target;

/// Small, so that the seeds (and what the fuzzer grows from them) cross it both ways.
const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    match inflate_body(data, LIMIT) {
        Ok(body) => assert!(body.len() <= LIMIT, "{} bytes", body.len()),
        Err(InflateError::DeclaredTooLarge { declared, limit }) => {
            assert_eq!(limit, LIMIT);
            assert!(declared > LIMIT as u64, "{declared}");
        }
        Err(InflateError::TooLarge { limit }) => assert_eq!(limit, LIMIT),
        Err(InflateError::Truncated | InflateError::Zstd(_) | InflateError::NoMemory) => {}
    }
});
