//! Bulk lists in aria2c's input-file format, parsed one line at a time: a URL line starts an entry,
//! indented `name=value` lines below it set the entry's options, `#` lines are comments.
//!
//! Options: `out=NAME`, `dir=DIR`, `checksum=sha-256=HEX` (aria2c) or `digest=sha256:HEX` (dfget),
//! `header=K: V` (repeatable), `tag=`, `application=`. Pure: lines in, entries out — no IO, so the
//! reader around it decides how much of a list is in memory (one entry at a time).
//!
//! Invariant: every line of a list ends up in exactly one item — an `Entry`, or an `EntryError`
//! naming the line, the entry's URL when there is one, and one reason. A bad line fails its own
//! entry and never a neighbour's.

use std::path::{Path, PathBuf};

use super::check;

/// One download of a list, checked: the URL's scheme and every option's syntax are valid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// 1-based line number of the URL line.
    pub line: u64,
    pub url: String,
    pub out: Option<String>,
    pub dir: Option<String>,
    /// `sha256:<lowercase hex>`.
    pub digest: Option<String>,
    pub headers: Vec<(String, String)>,
    pub tag: Option<String>,
    pub application: Option<String>,
}

/// A line that cannot become (part of) a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    pub line: u64,
    /// The entry's URL, when the failing line belongs to one.
    pub url: Option<String>,
    pub reason: String,
}

pub type Item = Result<Entry, EntryError>;

/// Feeds lines with `line`, then `finish`; each returns an item once the entry before it is
/// complete (a URL line completes the previous entry, the end of input the last one).
#[derive(Debug, Default)]
pub struct Parser {
    line_no: u64,
    pending: Option<Item>,
}

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// The next line, without its line ending (a trailing `\r` is dropped here).
    pub fn line(&mut self, text: &str) -> Option<Item> {
        self.line_no += 1;
        let text = text.strip_suffix('\r').unwrap_or(text);
        let body = text.trim_start_matches([' ', '\t']);
        if body.is_empty() || body.starts_with('#') {
            return None;
        }
        if body.len() == text.len() {
            let next = url_line(self.line_no, body.trim_end());
            return self.pending.replace(next);
        }
        let line = self.line_no;
        match &mut self.pending {
            None => Some(Err(EntryError { line, url: None, reason: "option line before any URL".into() })),
            Some(Ok(entry)) => {
                if let Err(reason) = apply_option(entry, body.trim_end()) {
                    let url = Some(entry.url.clone());
                    self.pending = Some(Err(EntryError { line, url, reason }));
                }
                None
            }
            // The entry already failed: its first reason is the one reported.
            Some(Err(_)) => None,
        }
    }

    /// A line that could not be read as text (not UTF-8, or over the length limit): it fails the
    /// entry it belongs to, or stands alone when it may be a URL line.
    pub fn bad_line(&mut self, reason: String, indented: bool) -> Option<Item> {
        self.line_no += 1;
        let line = self.line_no;
        match (&mut self.pending, indented) {
            (Some(pending @ Ok(_)), true) => {
                let url = pending.as_ref().ok().map(|e| e.url.clone());
                *pending = Err(EntryError { line, url, reason });
                None
            }
            (Some(Err(_)), true) => None,
            _ => self.pending.replace(Err(EntryError { line, url: None, reason })),
        }
    }

    pub fn finish(&mut self) -> Option<Item> {
        self.pending.take()
    }

    /// Lines seen so far.
    pub fn n_lines(&self) -> u64 {
        self.line_no
    }
}

fn url_line(line: u64, text: &str) -> Item {
    let err = |reason: String| Err(EntryError { line, url: Some(text.to_string()), reason });
    if text.contains('\t') {
        return err("several URLs on one line (aria2c mirrors) are not supported: one URL per line".into());
    }
    if let Err(reason) = check::url(text) {
        return err(reason);
    }
    Ok(Entry { line, url: text.to_string(), ..Entry::default() })
}

fn apply_option(entry: &mut Entry, text: &str) -> Result<(), String> {
    let (name, value) = text.split_once('=').ok_or_else(|| format!("option line `{text}` is not `name=value`"))?;
    match name.trim() {
        "out" => entry.out = Some(relative_path(value, "out")?.to_string()),
        "dir" => entry.dir = Some(non_empty(value, "dir")?.to_string()),
        "checksum" => entry.digest = Some(aria2_checksum(value)?),
        "digest" => entry.digest = Some(check::digest(value)?),
        "header" => entry.headers.push(check::header(value)?),
        "tag" => entry.tag = Some(value.to_string()),
        "application" => entry.application = Some(value.to_string()),
        other => {
            return Err(format!(
                "unknown option `{other}` (dfget reads out, dir, checksum, digest, header, tag, application)"
            ))
        }
    }
    if entry.headers.len() > crate::limits::MAX_REQUEST_HEADERS {
        return Err(format!("more than {} headers", crate::limits::MAX_REQUEST_HEADERS));
    }
    Ok(())
}

/// aria2c's `checksum=TYPE=DIGEST`; only sha-256 can be verified here.
fn aria2_checksum(value: &str) -> Result<String, String> {
    let (algo, hex) = value.split_once('=').ok_or_else(|| format!("checksum `{value}` is not `sha-256=HEX`"))?;
    if !matches!(algo.to_ascii_lowercase().as_str(), "sha-256" | "sha256") {
        return Err(format!("checksum type `{algo}` is not supported (sha-256)"));
    }
    check::digest(&format!("sha256:{hex}"))
}

fn non_empty<'a>(value: &'a str, what: &str) -> Result<&'a str, String> {
    if value.is_empty() {
        return Err(format!("{what}= is empty"));
    }
    Ok(value)
}

/// `out=` is a path below the output directory (as in aria2c): relative, no `..`.
fn relative_path<'a>(value: &'a str, what: &str) -> Result<&'a str, String> {
    let p = Path::new(non_empty(value, what)?);
    if p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(format!("{what}=`{value}` must be a relative path without `..` (use dir= for the directory)"));
    }
    if value.ends_with('/') {
        return Err(format!("{what}=`{value}` names a directory, not a file"));
    }
    Ok(value)
}

/// The file name an entry without `out=` gets: the URL's last path segment (percent-decoded), or
/// for `oras://` Apptainer's `<name>_<tag>.sif` (`<name>_sha256.<hex>.sif` for a digest reference).
pub fn default_name(url: &str) -> Result<String, String> {
    if url.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("oras://")) {
        let r = crate::source::oras::reference::Reference::parse(url).map_err(|e| e.message)?;
        let name = r.repository.rsplit('/').next().unwrap_or(&r.repository);
        let version = match (&r.digest, &r.tag) {
            (Some(d), _) => d.as_str().replacen(':', ".", 1),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        };
        return Ok(format!("{name}_{version}.sif"));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid URL `{url}`: {e}"))?;
    let last = parsed.path_segments().and_then(|mut s| s.next_back()).unwrap_or("");
    let name = percent_encoding::percent_decode_str(last).decode_utf8_lossy();
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(format!("`{url}` has no file name in its path: give out=NAME"));
    }
    Ok(name.into_owned())
}

/// Where an entry's file goes: `dir=` (relative to `cwd`) or `base_dir`, then `out=` or the
/// default name. `base_dir` is absolute.
pub fn output_path(entry: &Entry, base_dir: &Path, cwd: &Path) -> Result<PathBuf, String> {
    debug_assert!(base_dir.is_absolute());
    let dir = match &entry.dir {
        Some(d) => cwd.join(d),
        None => base_dir.to_path_buf(),
    };
    let name = match &entry.out {
        Some(o) => o.clone(),
        None => default_name(&entry.url)?,
    };
    Ok(dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` and renders each item as `ok L url [opts]` or `err L url: reason`, so a
    /// table row states the whole outcome in one string.
    fn parse(text: &str) -> Vec<String> {
        let mut p = Parser::new();
        let mut items: Vec<Item> = text.split('\n').filter_map(|l| p.line(l)).collect();
        items.extend(p.finish());
        items.into_iter().map(render).collect()
    }

    fn render(item: Item) -> String {
        match item {
            Ok(e) => {
                let mut s = format!("ok {} {}", e.line, e.url);
                let opt = |s: &mut String, k: &str, v: &Option<String>| {
                    if let Some(v) = v {
                        s.push_str(&format!(" {k}={v}"));
                    }
                };
                opt(&mut s, "out", &e.out);
                opt(&mut s, "dir", &e.dir);
                opt(&mut s, "digest", &e.digest);
                opt(&mut s, "tag", &e.tag);
                opt(&mut s, "application", &e.application);
                for (k, v) in &e.headers {
                    s.push_str(&format!(" header={k}:{v}"));
                }
                s
            }
            Err(e) => format!("err {} {}: {}", e.line, e.url.unwrap_or_default(), e.reason),
        }
    }

    fn check(text: &str, expected: &[&str]) {
        let got = parse(text);
        assert_eq!(got.len(), expected.len(), "{text:?}\ngot {got:#?}");
        for (g, e) in got.iter().zip(expected) {
            assert!(g.starts_with(e), "{text:?}\ngot      {g}\nexpected {e}…");
        }
    }

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn urls_comments_and_blank_lines() {
        check("", &[]);
        check("# only a comment\n\n   \n", &[]);
        check(
            "http://h/a\nhttp://h/b\r\n\n#c\nhttps://h/c",
            &["ok 1 http://h/a", "ok 2 http://h/b", "ok 5 https://h/c"],
        );
        check("http://h/a   \n", &["ok 1 http://h/a"]);
        check("oras://reg.io:5000/x/img:v1\n", &["ok 1 oras://reg.io:5000/x/img:v1"]);
    }

    #[test]
    fn options_attach_to_the_url_above() {
        let list = format!(
            "http://h/a\n  out=x.bin\n\tdir=sub\n  checksum=sha-256={}\n  header=X-A: 1\n  header=X-B: 2\n\
             # comment between options\n  tag=t\n  application=app\nhttp://h/b\n  digest=sha256:{HEX}\n",
            HEX.to_uppercase()
        );
        check(
            &list,
            &[
                &format!("ok 1 http://h/a out=x.bin dir=sub digest=sha256:{HEX} tag=t application=app header=X-A:1 header=X-B:2"),
                &format!("ok 10 http://h/b digest=sha256:{HEX}"),
            ],
        );
    }

    #[test]
    fn a_bad_line_fails_its_own_entry_only() {
        check(
            "http://h/a\nftp://h/b\n  out=b\nhttp://h/c\n  split=4\n  out=c\nhttp://h/d",
            &[
                "ok 1 http://h/a",
                "err 2 ftp://h/b: unsupported URL scheme",
                "err 5 http://h/c: unknown option `split`",
                "ok 7 http://h/d",
            ],
        );
        check("  out=x\nhttp://h/a", &["err 1 : option line before any URL", "ok 2 http://h/a"]);
        check("http://h/a\n  checksum=md5=abc", &["err 2 http://h/a: checksum type `md5` is not supported"]);
        check("http://h/a\n  checksum=sha-256=abc", &["err 2 http://h/a: digest `sha256:abc`: expected 64 hex"]);
        check("http://h/a\n  digest=sha256:xyz", &["err 2 http://h/a: digest"]);
        check("http://h/a\n  header=NoColon", &["err 2 http://h/a: header `NoColon` is not `Key: Value`"]);
        check("http://h/a\n  header=Bad Name: v", &["err 2 http://h/a: invalid header `Bad Name`"]);
        check("http://h/a\n  out=/etc/passwd", &["err 2 http://h/a: out=`/etc/passwd` must be a relative path"]);
        check("http://h/a\n  out=../x", &["err 2 http://h/a: out=`../x` must be a relative path"]);
        check("http://h/a\n  dir=", &["err 2 http://h/a: dir= is empty"]);
        check("http://h/a\n  novalue", &["err 2 http://h/a: option line `novalue` is not `name=value`"]);
        check("http://h/a\thttp://m/a", &["err 1 http://h/a\thttp://m/a: several URLs on one line"]);
        // Only the first bad option of an entry is reported.
        check(
            "http://h/a\n  bad=1\n  worse=2\nhttp://h/b",
            &["err 2 http://h/a: unknown option `bad`", "ok 4 http://h/b"],
        );
    }

    #[test]
    fn unreadable_lines() {
        let mut p = Parser::new();
        assert_eq!(p.line("http://h/a"), None);
        assert_eq!(p.bad_line("not UTF-8".into(), true), None);
        let item = p.bad_line("line over 65536 bytes".into(), false);
        assert_eq!(render(item.expect("a failed entry")), "err 2 http://h/a: not UTF-8");
        assert_eq!(render(p.finish().expect("the long line")), "err 3 : line over 65536 bytes");
        assert_eq!(p.n_lines(), 3);
    }

    fn check_name(url: &str, expected: Result<&str, &str>) {
        match (default_name(url), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{url}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{url}: {got}"),
            (got, want) => panic!("{url}: got {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn default_names() {
        check_name("http://h/a/b/file.tar.gz", Ok("file.tar.gz"));
        check_name("http://h/a/f%20g.bin?x=1#y", Ok("f g.bin"));
        check_name("http://h/", Err("no file name"));
        check_name("http://h", Err("no file name"));
        check_name("http://h/a/", Err("no file name"));
        check_name("http://h/a%2Fb", Err("no file name"));
        check_name("http://h/..", Err("no file name"));
        check_name("oras://reg.io:5000/lab/tools/img:v1.2", Ok("img_v1.2.sif"));
        check_name("oras://localhost/img", Ok("img_latest.sif"));
        check_name(&format!("oras://localhost/a/img@sha256:{HEX}"), Ok(&format!("img_sha256.{HEX}.sif")));
    }

    #[test]
    fn output_paths() {
        let (base, cwd) = (Path::new("/out"), Path::new("/home/u"));
        let entry = |out: Option<&str>, dir: Option<&str>| Entry {
            url: "http://h/x/f.bin".into(),
            out: out.map(String::from),
            dir: dir.map(String::from),
            ..Entry::default()
        };
        let path = |e: Entry| output_path(&e, base, cwd).expect("a path");
        assert_eq!(path(entry(None, None)), Path::new("/out/f.bin"));
        assert_eq!(path(entry(Some("g"), None)), Path::new("/out/g"));
        assert_eq!(path(entry(Some("s/g"), Some("d"))), Path::new("/home/u/d/s/g"));
        assert_eq!(path(entry(None, Some("/abs"))), Path::new("/abs/f.bin"));
    }
}
