//! House rules a machine can check: every Rust file opens with a `//!` paragraph saying its role;
//! no `dbg!`, `todo!` or `unimplemented!` is left outside tests; and in `src/`, outside
//! `#[cfg(test)]`/`#[test]` items, no function is longer than 70 lines and nothing calls
//! `.unwrap()`. The last two read the code through a small scanner (`Code`) that blanks comments,
//! strings and char literals and counts braces, so a brace or an `unwrap()` in a string or a
//! comment does not count.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if !matches!(p.file_name().and_then(|n| n.to_str()), Some("target" | "corpus" | "artifacts")) {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn all_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches", "fuzz"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "tidy found too few files: {files:?}");
    files
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let missing: Vec<_> = all_files()
        .into_iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            !text.lines().take(5).any(|l| l.starts_with("//!"))
        })
        .collect();
    assert!(missing.is_empty(), "files without a //! paragraph: {missing:?}");
}

#[test]
fn no_debug_macros_in_src() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let banned = [concat!("db", "g!("), concat!("to", "do!("), concat!("unimple", "mented!(")];
    let mut hits = Vec::new();
    for p in files {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if banned.iter().any(|b| line.contains(b)) {
                hits.push(format!("{}:{}", p.display(), n + 1));
            }
        }
    }
    assert!(hits.is_empty(), "debug macros left in src: {hits:?}");
}

/// Longest function allowed, in lines from its `fn` line to its closing brace.
const MAX_FN_LINES: usize = 70;

/// A source file with comments, string and char literals blanked (newlines kept), so braces and
/// words in it are code.
struct Code {
    text: Vec<u8>,
}

impl Code {
    fn new(src: &str) -> Code {
        let b = src.as_bytes();
        let mut out = b.to_vec();
        let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
            for c in &mut out[from..to] {
                if *c != b'\n' {
                    *c = b' ';
                }
            }
        };
        let mut i = 0;
        while i < b.len() {
            let end = match b[i] {
                b'/' if b.get(i + 1) == Some(&b'/') => {
                    b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |n| i + n)
                }
                b'/' if b.get(i + 1) == Some(&b'*') => block_comment_end(b, i),
                b'"' => string_end(b, i + 1),
                b'r' if is_raw_string_start(b, i) => raw_string_end(b, i),
                b'b' if b.get(i + 1) == Some(&b'"') => string_end(b, i + 2),
                b'\'' => char_end(b, i).unwrap_or(i + 1),
                _ => i + 1,
            };
            if end > i + 1 || matches!(b[i], b'"' | b'\'') {
                blank(&mut out, i, end);
            }
            i = end.max(i + 1);
        }
        Code { text: out }
    }

    fn line_of(&self, pos: usize) -> usize {
        self.text[..pos].iter().filter(|&&c| c == b'\n').count() + 1
    }

    /// Position of the brace closing the one at `open`.
    fn closing(&self, open: usize) -> Option<usize> {
        let mut depth = 0usize;
        for (i, &c) in self.text.iter().enumerate().skip(open) {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Positions of `word` standing alone (not part of a longer identifier).
    fn words<'a>(&'a self, word: &'a str) -> impl Iterator<Item = usize> + 'a {
        let w = word.as_bytes();
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        (0..self.text.len().saturating_sub(w.len() - 1)).filter(move |&i| {
            self.text[i..].starts_with(w)
                && (i == 0 || !ident(self.text[i - 1]))
                && self.text.get(i + w.len()).is_none_or(|&c| !ident(c))
        })
    }

    /// Byte ranges of items marked `#[cfg(test)]` or `#[test]` (attribute to closing brace).
    fn test_items(&self) -> Vec<(usize, usize)> {
        let text = String::from_utf8_lossy(&self.text);
        let mut items = Vec::new();
        for attr in ["#[cfg(test)]", "#[test]"] {
            for (start, _) in text.match_indices(attr) {
                let Some(open) = self.body_start(start + attr.len()) else { continue };
                if let Some(close) = self.closing(open) {
                    items.push((start, close));
                }
            }
        }
        items
    }

    /// The `{` opening the body of the item starting at `from`, or None when a `;` comes first
    /// (a declaration without a body, `mod x;`, a trait method).
    fn body_start(&self, from: usize) -> Option<usize> {
        let mut depth = 0i32;
        for (i, &c) in self.text.iter().enumerate().skip(from) {
            match c {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b'{' if depth == 0 => return Some(i),
                // A declaration without a body, or the enclosing block ended (a `fn(..)` type).
                b';' | b'}' if depth == 0 => return None,
                _ => {}
            }
        }
        None
    }

    /// (first line, line count) of every function with a body outside `excluded`.
    fn functions(&self, excluded: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let inside = |p: usize| excluded.iter().any(|&(a, b)| a <= p && p <= b);
        let is_pointer_type = |p: usize| self.text[p + 2..].iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'(');
        self.words("fn")
            .filter(|&p| !inside(p) && !is_pointer_type(p))
            .filter_map(|p| {
                let open = self.body_start(p)?;
                let close = self.closing(open)?;
                let first = self.line_of(p);
                Some((first, self.line_of(close) - first + 1))
            })
            .collect()
    }

    /// Lines calling `.unwrap()` outside `excluded`.
    fn unwraps(&self, excluded: &[(usize, usize)]) -> Vec<usize> {
        let text = String::from_utf8_lossy(&self.text);
        text.match_indices(".unwrap()")
            .map(|(p, _)| p)
            .filter(|&p| !excluded.iter().any(|&(a, b)| a <= p && p <= b))
            .map(|p| self.line_of(p))
            .collect()
    }
}

fn block_comment_end(b: &[u8], start: usize) -> usize {
    let (mut depth, mut i) = (0usize, start);
    while i + 1 < b.len() {
        if b[i] == b'/' && b[i + 1] == b'*' {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// After the closing `"` of a string whose contents start at `i`.
fn string_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

fn is_raw_string_start(b: &[u8], i: usize) -> bool {
    let p = if i > 0 && b[i - 1] == b'b' { i - 1 } else { i };
    let prev_ident = p > 0 && (b[p - 1].is_ascii_alphanumeric() || b[p - 1] == b'_');
    let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
    !prev_ident && b.get(i + 1 + hashes) == Some(&b'"')
}

fn raw_string_end(b: &[u8], i: usize) -> usize {
    let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
    let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
    let body = i + 2 + hashes;
    b[body..].windows(close.len()).position(|w| w == close.as_slice()).map_or(b.len(), |n| body + n + close.len())
}

/// After a char literal at `i` (`'x'`, `'\n'`, `'\u{..}'`), or None for a lifetime (`'a`).
fn char_end(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i + 1) == Some(&b'\\') {
        return b[i + 2..].iter().position(|&c| c == b'\'').map(|n| i + 2 + n + 1);
    }
    let ch_len = std::str::from_utf8(&b[i + 1..(i + 5).min(b.len())])
        .ok()
        .or_else(|| std::str::from_utf8(&b[i + 1..(i + 2).min(b.len())]).ok())
        .and_then(|s| s.chars().next())
        .map_or(1, char::len_utf8);
    (b.get(i + 1 + ch_len) == Some(&b'\'')).then_some(i + 2 + ch_len)
}

fn src_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    files.sort();
    files
}

#[test]
fn no_function_in_src_is_longer_than_70_lines() {
    let mut long = Vec::new();
    for p in src_files() {
        let code = Code::new(&std::fs::read_to_string(&p).unwrap_or_default());
        for (line, n) in code.functions(&code.test_items()) {
            if n > MAX_FN_LINES {
                long.push(format!("{}:{line} ({n} lines)", p.display()));
            }
        }
    }
    assert!(long.is_empty(), "functions over {MAX_FN_LINES} lines (split them): {long:#?}");
}

#[test]
fn no_unwrap_in_src_outside_tests() {
    let mut hits = Vec::new();
    for p in src_files() {
        let code = Code::new(&std::fs::read_to_string(&p).unwrap_or_default());
        hits.extend(code.unwraps(&code.test_items()).into_iter().map(|l| format!("{}:{l}", p.display())));
    }
    assert!(hits.is_empty(), ".unwrap() outside tests (return an error, or expect() with the invariant): {hits:#?}");
}

/// The scanner itself: braces and `unwrap()` in strings, chars and comments do not count,
/// lifetimes are not chars, test items are excluded, and lengths are counted fn line to brace.
#[test]
fn the_scanner_sees_code_only() {
    let src = r##"
fn short<'a>(x: &'a str) -> char {
    let _ = "}{ .unwrap()";
    let _ = r#"" { "#;
    // { .unwrap()
    /* { /* nested } */ .unwrap() */
    let _ = '{';
    let _ = b"}";
    '}'
}
fn body_less();
fn calls() { x.unwrap(); y.unwrap_or(1); }
#[cfg(test)]
mod tests {
    fn inside() { z.unwrap(); }
}
#[test]
fn a_test() { w.unwrap(); }
fn last() {
    let f: fn(u8) -> u8 = id;
}
struct S { f: fn(u8) -> bool }
"##;
    let code = Code::new(src);
    let tests = code.test_items();
    assert_eq!(tests.len(), 2, "{tests:?}");
    assert_eq!(code.functions(&tests), vec![(2, 9), (12, 1), (19, 3)]);
    assert_eq!(code.unwraps(&tests), vec![12]);
    assert_eq!(code.unwraps(&[]), vec![12, 15, 18]);
}
