//! Registry URL parsing of arbitrary text: any input gives `Ok` or an `InvalidUrl` error, never a
//! panic (`ttl=1e20` once panicked in `Duration::from_secs_f64`); every accessor of a parsed URL
//! (root, durations, flags) is total; and a password in the URL never appears in its `Debug`
//! output, its `raw` text or an error message.
#![no_main]

use getty_registry::{Error, RegistryUrl, redact_url};
use libfuzzer_sys::fuzz_target;

fn check_hidden(password: &str, shown: &str) {
    // Very short passwords can occur in the rest of the URL by chance.
    if password.len() >= 4 {
        assert!(!shown.contains(password), "password shown in {shown:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = redact_url(text);
    match RegistryUrl::parse(text) {
        Ok(url) => {
            let mut shown = format!("{url:?}");
            for name in ["ttl", "timeout"] {
                if let Err(e) = url.seconds(name) {
                    assert!(matches!(e, Error::InvalidUrl { .. }));
                    shown.push_str(&e.to_string());
                }
            }
            if let Err(e) = url.flag("tls") {
                shown.push_str(&e.to_string());
            }
            if let Err(e) = url.root("/getty") {
                shown.push_str(&e.to_string());
            }
            shown.push_str(&url.raw);
            if let Some(c) = &url.credentials {
                check_hidden(c.password.expose(), &shown);
            }
        }
        Err(e) => {
            assert!(matches!(e, Error::InvalidUrl { .. }), "{e:?}");
            // The password as written between `:` and `@` of the authority.
            if let Some((_, rest)) = text.split_once("://") {
                let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                if let Some((userinfo, _)) = rest[..end].rsplit_once('@')
                    && let Some((_, password)) = userinfo.split_once(':')
                {
                    check_hidden(password, &e.to_string());
                }
            }
        }
    }
});
