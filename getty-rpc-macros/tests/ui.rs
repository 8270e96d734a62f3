//! Compile errors for misuse of `#[service]`: each file in ui/ must fail with the message in
//! its .stderr. Regenerate with `TRYBUILD=overwrite cargo test -p getty-rpc-macros --test ui`
//! and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
