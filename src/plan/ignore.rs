//! `.dockerignore`: which files of a build context never reach the
//! builder, so changing them needs no rebuild. Docker's rules: a line per
//! pattern, `#` comments, `!` re-includes, the last matching line wins, a
//! pattern matching a directory matches everything under it; `*` and `?`
//! stay within a path component, `**` spans any number of them.

use std::path::Path;

pub struct Ignore {
    /// (pattern components, re-include)
    rules: Vec<(Vec<String>, bool)>,
}

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|line| {
                let (pattern, include) = match line.strip_prefix('!') {
                    Some(p) => (p.trim(), true),
                    None => (line, false),
                };
                let parts: Vec<String> =
                    pattern.split('/').filter(|p| !p.is_empty() && *p != ".").map(String::from).collect();
                (!parts.is_empty()).then_some((parts, include))
            })
            .collect();
        Ignore { rules }
    }

    /// Whether `path` (relative to the context) is left out of the build.
    pub fn ignores(&self, path: &Path) -> bool {
        let parts: Vec<&str> = path.iter().filter_map(|p| p.to_str()).collect();
        let mut ignored = false;
        for (pattern, include) in &self.rules {
            // The file itself or any directory above it.
            if (1..=parts.len()).any(|n| components_match(pattern, &parts[..n])) {
                ignored = !include;
            }
        }
        ignored
    }
}

fn components_match(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => (0..=path.len()).any(|skip| components_match(rest, &path[skip..])),
        Some((first, rest)) => path
            .split_first()
            .is_some_and(|(p, more)| glob(first.as_bytes(), p.as_bytes()) && components_match(rest, more)),
    }
}

/// `*`, `?`, `[a-z]`/`[^a-z]` and `\x` within one path component.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && glob(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some(end) = rest.iter().position(|&c| c == b']') else { return false };
            let Some((&c, tail)) = name.split_first() else { return false };
            let (negate, class) = match rest[..end].split_first() {
                Some((b'^' | b'!', class)) => (true, class),
                _ => (false, &rest[..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob(&rest[end + 1..], tail)
        }
        Some((b'\\', rest)) if !rest.is_empty() => name.first() == Some(&rest[0]) && glob(&rest[1..], &name[1..]),
        Some((&c, rest)) => name.first() == Some(&c) && glob(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_rules_decide_what_reaches_the_builder() {
        let ignore = Ignore::parse(
            "# build leftovers\n*.md\n!IMPORTANT.md\nnode_modules\n/dist/\ndocs/**/*.png\ntmp?\n[ab]cache\n**/*.log\n",
        );
        for ignored in [
            "README.md",
            "node_modules",
            "node_modules/x/index.js",
            "dist/app.js",
            "docs/a/b/pic.png",
            "docs/pic.png",
            "tmp1",
            "acache/x",
            "deep/down/run.log",
            "run.log",
        ] {
            assert!(ignore.ignores(Path::new(ignored)), "{ignored} is ignored");
        }
        for kept in ["IMPORTANT.md", "src/main.py", "sub/README.md", "src/dist/x", "docs/pic.jpg", "tmp12", "ccache"] {
            assert!(!ignore.ignores(Path::new(kept)), "{kept} reaches the builder");
        }
        assert!(!Ignore::parse("").ignores(Path::new("anything")));
        assert!(Ignore::parse("*\n!src\n").ignores(Path::new("notes.txt")));
        assert!(!Ignore::parse("*\n!src\n").ignores(Path::new("src/main.py")), "re-included with its directory");
    }
}
