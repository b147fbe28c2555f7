//! Paths as the manifest keeps them: raw bytes, relative to the source, `/`-separated, no
//! leading or trailing slash (the source folder itself is the empty path). Every byte-path
//! helper of the engine lives here.

/// `dir/name` (just `name` when `dir` is the source folder).
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        p.extend_from_slice(dir);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// The archive member name of `rel` under the archive's top folder `top` (`top` itself for the
/// source folder).
pub fn member(top: &[u8], rel: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        top.to_vec()
    } else {
        join(top, rel)
    }
}

/// (folder, name) of a path; the folder of a top-level name is the empty path.
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// The folder a path lies in.
pub fn parent_of(path: &[u8]) -> &[u8] {
    split_parent(path).0
}

/// The non-empty components of a path.
pub fn components(p: &[u8]) -> Vec<&[u8]> {
    p.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect()
}

/// True when `p` is `dir` or lies below it (`dir` empty: everything).
pub fn within(p: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || (p.starts_with(dir) && (p.len() == dir.len() || p[dir.len()] == b'/'))
}

/// True when `p` lies strictly below `dir`.
pub fn below(p: &[u8], dir: &[u8]) -> bool {
    p.len() > dir.len() && within(p, dir)
}

/// True when `p` is a folder strictly above `inner`.
pub fn above(p: &[u8], inner: &[u8]) -> bool {
    below(inner, p) && !p.is_empty()
}

/// `p` without leading and trailing slashes.
pub fn trim_slashes(p: &[u8]) -> &[u8] {
    let start = p.iter().position(|&b| b != b'/').unwrap_or(p.len());
    let end = p.iter().rposition(|&b| b != b'/').map_or(start, |i| i + 1);
    &p[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_agree_on_edges() {
        assert_eq!(join(b"", b"a"), b"a");
        assert_eq!(join(b"a", b"b"), b"a/b");
        assert_eq!(split_parent(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_parent(b"c"), (&b""[..], &b"c"[..]));
        assert!(within(b"a/b", b"a") && within(b"a", b"a") && within(b"x", b""));
        assert!(!within(b"ab", b"a"));
        assert!(below(b"a/b", b"a") && !below(b"a", b"a") && below(b"a", b""));
        assert!(above(b"a", b"a/b") && !above(b"a", b"a") && !above(b"a", b"ab/c"));
        assert_eq!(trim_slashes(b"//a/b/"), b"a/b");
        assert_eq!(components(b"a//b/"), vec![&b"a"[..], &b"b"[..]]);
    }
}
