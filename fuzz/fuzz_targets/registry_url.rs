//! Registry URL parsing of arbitrary text: any input gives `Ok` or an `InvalidUrl` error, never a
//! panic (`ttl=1e20` once panicked in `Duration::from_secs_f64`); every accessor of a parsed URL
//! (root, durations, flags) is total; and a password in the URL never appears in its `Debug`
//! output, its `raw` text or an error message.
#![no_main]

use getty_registry::{Error, RegistryUrl, redact_url};
use libfuzzer_sys::fuzz_target;

/// The password as written in the authority (between `:` and the last `@` before the path), and
/// the input without the user info: a password only counts as shown if the rest of the URL (and
/// the user name, which is shown) does not hold the same text anyway.
fn written_password(text: &str) -> Option<(&str, String)> {
    let (scheme, rest) = text.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (userinfo, after) = rest.split_at(end);
    let (userinfo, hosts) = userinfo.rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':')?;
    // Only distinctive passwords are checked: at least 6 ASCII letters and digits (which URL
    // parsing neither decodes nor strips, unlike `%XX`, tabs and newlines).
    if password.len() < 6 || !password.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    // The url crate drops tabs and newlines anywhere, which can join text into the password.
    let rest: String = format!("{scheme}://{user}@{hosts}{after}")
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    Some((password, rest))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = redact_url(text);
    let written = written_password(text);
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
            // The password must not show, unless the rest of the URL, the user name or a decoded
            // parameter holds the same text anyway.
            let rest = written.as_ref().map_or(text, |(_, rest)| rest.as_str());
            let check = |password: &str| {
                // Debug escapes (`\0`, `\u{..}`) can spell the password out of other text too.
                // URL parsing lowercases the scheme and hosts, which can spell it too.
                let elsewhere = rest.contains(password)
                    || rest.to_ascii_lowercase().contains(password)
                    || format!("{rest:?}").contains(password)
                    || format!("{:?}", url.params).contains(password)
                    || url.credentials.as_ref().is_some_and(|c| c.user.contains(password))
                    || url
                        .params
                        .iter()
                        .any(|(k, v)| k.contains(password) || v.contains(password));
                if password.len() >= 4 && !elsewhere {
                    assert!(!shown.contains(password), "password shown in {shown:?}");
                }
            };
            if let Some((password, _)) = &written {
                check(password);
            }

        }
        Err(e) => {
            assert!(matches!(e, Error::InvalidUrl { .. }), "{e:?}");
            if let Some((password, rest)) = &written
                && !rest.contains(password)
                && !format!("{rest:?}").contains(password)
                && !rest.to_ascii_lowercase().contains(password)
            {
                let shown = e.to_string();
                assert!(!shown.contains(password), "password shown in {shown:?}");
            }
        }
    }
});
