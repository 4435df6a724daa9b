//! Following version tags: which of a repository's tags is the newest one
//! a service may move to, from its current tag, a `follow:` level and
//! include/exclude patterns. Pure: the tags come from the registry.

pub use crate::settings::Bump;

/// A tag as a version: `v1.4.2-alpine` is prefix `v`, numbers 1.4.2 and
/// suffix `-alpine`. Tags of another shape are another line of images.
#[derive(Debug, PartialEq, Eq)]
struct Version<'a> {
    prefix: &'a str,
    numbers: Vec<u64>,
    suffix: &'a str,
}

fn version(tag: &str) -> Option<Version<'_>> {
    let start = tag.find(|c: char| c.is_ascii_digit())?;
    let (prefix, rest) = tag.split_at(start);
    let end = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
    let numbers = rest[..end].trim_end_matches('.');
    let suffix = &rest[numbers.len()..];
    // `1.4.3-alpine`, `2.0+build`; not a hash (`autonomy-9a8b7c`).
    if !(suffix.is_empty() || suffix.starts_with(['-', '+', '_'])) {
        return None;
    }
    let numbers = numbers.split('.').map(|n| n.parse().ok()).collect::<Option<Vec<u64>>>()?;
    Some(Version { prefix, numbers, suffix })
}

/// A tag that names a version (`1.4.2`, `v2`): not a moving one.
pub fn is_version(tag: &str) -> bool {
    version(tag).is_some()
}

/// The family of a moving tag that CI pairs with fixed ones:
/// `autonomy-latest` → `autonomy-`. Only `<name>-latest` (or `_latest`):
/// other tags with a dash (`stable-alpine`) are lines of their own.
pub fn family(tag: &str) -> Option<&str> {
    tag.strip_suffix("latest").filter(|f| f.ends_with(['-', '_']))
}

/// A member of `family` that names one build: `autonomy-<commit>` (at
/// least 7 hex digits) or `autonomy-<version>`.
pub fn is_fixed_member(family: &str, tag: &str) -> bool {
    tag.strip_prefix(family).is_some_and(|rest| {
        rest.len() >= 7 && rest.len() <= 40 && rest.chars().all(|c| c.is_ascii_hexdigit()) || is_version(rest)
    })
}

/// `*` matches any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len())
                    .any(|i| text.is_char_boundary(head.len() + i) && glob(tail, &text[head.len() + i..]))
        }
    }
}

/// The newest tag `current` may move to under `follow`, and how big a
/// move it is (None: nothing newer of the same shape).
pub fn newest(
    current: &str,
    tags: &[String],
    follow: Bump,
    include: &[String],
    exclude: &[String],
) -> Option<(String, Bump)> {
    let now = version(current)?;
    let mut best: Option<(&String, Version, Bump)> = None;
    for tag in tags {
        if !include.is_empty() && !include.iter().any(|p| glob(p, tag)) || exclude.iter().any(|p| glob(p, tag)) {
            continue;
        }
        let Some(v) = version(tag) else { continue };
        if v.prefix != now.prefix
            || v.suffix != now.suffix
            || v.numbers.len() != now.numbers.len()
            || v.numbers <= now.numbers
        {
            continue;
        }
        let first_change = v.numbers.iter().zip(&now.numbers).position(|(a, b)| a != b).unwrap_or(0);
        let bump = match first_change {
            0 if now.numbers.len() > 1 => Bump::Major,
            1 if now.numbers.len() > 2 => Bump::Minor,
            _ => Bump::Patch,
        };
        if bump > follow {
            continue;
        }
        if best.as_ref().is_none_or(|(_, b, _)| v.numbers > b.numbers) {
            best = Some((tag, v, bump));
        }
    }
    best.map(|(tag, _, bump)| (tag.clone(), bump))
}

/// `text` (a compose file) with `service`'s `image:` line moved from
/// `old` to `new` and nothing else touched: comments, quoting and
/// formatting stay. Err: why it cannot be done by such an edit.
pub fn rewrite_image(text: &str, service: &str, old: &str, new: &str) -> Result<String, String> {
    let mut in_services = false;
    let mut service_indent: Option<usize> = None;
    let mut current: Option<&str> = None;
    let mut found = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let body = line.trim_end_matches(['\n', '\r']);
        let trimmed = body.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = body.len() - trimmed.len();
        if indent == 0 {
            in_services = trimmed.starts_with("services:");
            service_indent = None;
            current = None;
            continue;
        }
        if !in_services {
            continue;
        }
        let key = trimmed.split(':').next().unwrap_or("").trim().trim_matches(['"', '\'']);
        if service_indent.is_none_or(|i| indent <= i) && trimmed.contains(':') {
            service_indent = Some(indent);
            current = Some(key);
            continue;
        }
        if current == Some(service) && key == "image" {
            let value = trimmed["image".len()..].trim_start_matches([' ', ':']).trim_start();
            let value = value.split(" #").next().unwrap_or(value).trim_end();
            if value.trim_matches(['"', '\'']) != old {
                return Err(format!("service {service}'s image is written {value} (a variable?), not {old}"));
            }
            let column = start + (body.len() - trimmed.len()) + trimmed.find(old).unwrap_or(0);
            found = Some(column);
        }
    }
    let column = found.ok_or_else(|| format!("no `image: {old}` line for service {service}"))?;
    Ok(format!("{}{new}{}", &text[..column], &text[column + old.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags() -> Vec<String> {
        ["1.4.2", "1.4.3", "1.5.0", "2.0.0", "1.4.3-alpine", "1.4.10-rc1", "latest", "1.4", "v1.9.9"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn each_level_offers_the_newest_tag_of_the_same_shape() {
        let t = tags();
        assert_eq!(newest("1.4.2", &t, Bump::Patch, &[], &[]), Some(("1.4.3".into(), Bump::Patch)));
        assert_eq!(newest("1.4.2", &t, Bump::Minor, &[], &[]), Some(("1.5.0".into(), Bump::Minor)));
        assert_eq!(newest("1.4.2", &t, Bump::Major, &[], &[]), Some(("2.0.0".into(), Bump::Major)));
        assert_eq!(newest("1.4.2-alpine", &t, Bump::Major, &[], &[]), Some(("1.4.3-alpine".into(), Bump::Patch)));
        assert_eq!(newest("2.0.0", &t, Bump::Major, &[], &[]), None);
        assert_eq!(newest("latest", &t, Bump::Major, &[], &[]), None, "not a version");
        assert!(!is_version("autonomy-9a8b7c6d5e4f") && is_version("v2") && is_version("1.4.10-rc1"));
        assert_eq!(newest("1.4.2", &t, Bump::Major, &[], &["2.*".into()]), Some(("1.5.0".into(), Bump::Minor)));
        assert_eq!(newest("1.4.2", &t, Bump::Major, &["1.4.*".into()], &[]), Some(("1.4.3".into(), Bump::Patch)));
        let numeric = ["1.4.9", "1.4.10"].map(String::from);
        assert_eq!(newest("1.4.2", &numeric, Bump::Patch, &[], &[]).unwrap().0, "1.4.10", "numbers, not text");
    }

    #[test]
    fn the_image_line_is_the_only_thing_rewritten() {
        let text = "# shop\nservices:\n  db:\n    image: r/web:1.4.2\n  web:\n    # pinned by us\n    image: \"r/web:1.4.2\"  # keep\n    ports: [\"80:80\"]\nvolumes: {}\n";
        let out = rewrite_image(text, "web", "r/web:1.4.2", "r/web:1.4.3").unwrap();
        assert_eq!(out, text.replace("\"r/web:1.4.2\"", "\"r/web:1.4.3\""));
        assert!(out.contains("  db:\n    image: r/web:1.4.2\n"), "another service's line stays");
        let err = rewrite_image("services:\n  web:\n    image: r/web:${TAG}\n", "web", "r/web:1.4.2", "x").unwrap_err();
        assert!(err.contains("variable"), "{err}");
        assert!(rewrite_image(text, "api", "r/web:1.4.2", "x").is_err());
    }

    #[test]
    fn only_name_latest_pairs_with_fixed_builds() {
        assert_eq!(family("autonomy-latest"), Some("autonomy-"));
        assert_eq!((family("latest"), family("stable-alpine")), (None, None));
        assert!(
            is_fixed_member("autonomy-", "autonomy-9a8b7c6d5e4f") && is_fixed_member("autonomy-", "autonomy-1.4.2")
        );
        assert!(!is_fixed_member("autonomy-", "autonomy-latest") && !is_fixed_member("autonomy-", "autonomy-dev"));
    }

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob("*-alpine", "1.4.3-alpine") && glob("1.*.3", "1.14.3") && glob("*", ""));
        assert!(!glob("*-alpine", "1.4.3") && !glob("1.*", "2.0"));
    }
}
