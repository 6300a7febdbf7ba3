//! The subset of Perl's Config::General that tgt's `tgt-admin` reads `targets.conf` with, and
//! with the same options it passes (`-UseApacheInclude`, `-IncludeDirectories`, `-IncludeGlob`,
//! `-MergeDuplicateBlocks`; multiple options allowed): `key value` and `key = value` lines,
//! `#` comments, `\` line continuation, quoted values, `<block name>` ... `</block>` (blocks of
//! the same name merged), `<block/>`, and `include`/`includeoptional` of files, directories
//! and globs. The result keeps Config::General's shapes (a value, a list of values when a key
//! repeats, a hash for a block), because tgt-admin's behaviour depends on them.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// One key's value, in the shapes Config::General produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `key value`; `None` for a key with no value.
    Str(Option<String>),
    /// A block (`<key>` or `<key name>`): its keys.
    Hash(Node),
    /// The key appeared more than once.
    List(Vec<Value>),
}

impl Value {
    /// The text of a plain value, `None` for blocks, lists and missing values.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => s.as_deref(),
            _ => None,
        }
    }

    /// Perl's `length $value` on this value: false for a missing or empty value only (a
    /// reference stringifies to something non-empty).
    pub fn has_length(&self) -> bool {
        match self {
            Value::Str(s) => s.as_deref().is_some_and(|s| !s.is_empty()),
            _ => true,
        }
    }

    /// Perl's `"$value"`: a reference prints as `HASH(...)`/`ARRAY(...)`, as tgt-admin would.
    pub fn perl_string(&self) -> String {
        match self {
            Value::Str(s) => s.clone().unwrap_or_default(),
            Value::Hash(_) => "HASH(0x0)".into(),
            Value::List(_) => "ARRAY(0x0)".into(),
        }
    }
}

/// A block's keys, in byte order (tgt-admin walks them with Perl's `sort keys`).
pub type Node = BTreeMap<String, Value>;

/// Why a configuration could not be read; the text names the file and line where it can.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfError {
    #[error("The file \"{0}\" does not exist!")]
    Missing(String),
    #[error("Could not open {0}!({1})")]
    Unreadable(String, String),
    #[error("EndBlock \"</{0}>\" has no StartBlock statement (level: {1})!")]
    StrayEnd(String, usize),
    #[error("Block \"<{0}>\" has no EndBlock statement!")]
    Unclosed(String),
    #[error("Block <{0}> already exists as scalar entry!")]
    BlockOverScalar(String),
    #[error("Cannot append named block <{0} {1}> to array of scalars!")]
    BlockOverList(String, String),
    #[error("here-documents (\"{0} <<...\") are not supported")]
    HereDoc(String),
    #[error("bad include pattern {0}: {1}")]
    Pattern(String, String),
    #[error("includes nested more than {0} deep")]
    TooDeep(usize),
}

/// Includes may nest this deep (Config::General refuses only files already read).
const MAX_INCLUDE_DEPTH: usize = 32;

/// Reads `path` and everything it includes; warnings (a file included twice) go to `warn`.
pub fn parse_file(path: &str, warn: &mut dyn FnMut(String)) -> Result<Node, ConfError> {
    let mut r = Reader {
        files: HashSet::new(),
        lines: Vec::new(),
        warn,
    };
    r.open(path, 0)?;
    let lines = std::mem::take(&mut r.lines);
    let mut root = Node::new();
    parse_into(&mut root, &lines, 0)?;
    Ok(root)
}

/// Parses configuration text (no includes relative to anything but the current directory).
pub fn parse_str(text: &str) -> Result<Node, ConfError> {
    let mut ignore = |_| {};
    let mut r = Reader {
        files: HashSet::new(),
        lines: Vec::new(),
        warn: &mut ignore,
    };
    r.read(text, 0)?;
    let lines = std::mem::take(&mut r.lines);
    let mut root = Node::new();
    parse_into(&mut root, &lines, 0)?;
    Ok(root)
}

/// Collects logical lines from a file and its includes, in reading order.
struct Reader<'a> {
    files: HashSet<String>,
    lines: Vec<String>,
    warn: &'a mut dyn FnMut(String),
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{', '\\'])
}

impl Reader<'_> {
    fn open(&mut self, path: &str, depth: usize) -> Result<(), ConfError> {
        if depth > MAX_INCLUDE_DEPTH {
            return Err(ConfError::TooDeep(MAX_INCLUDE_DEPTH));
        }
        if is_glob(path) {
            for f in expand_glob(path)? {
                self.open(&f, depth + 1)?;
            }
            return Ok(());
        }
        let p = Path::new(path);
        if !p.exists() {
            return Err(ConfError::Missing(path.to_string()));
        }
        if p.is_dir() {
            // A directory: its regular files (dot files too) in byte order, not recursing.
            let rd = std::fs::read_dir(p)
                .map_err(|e| ConfError::Unreadable(path.into(), e.to_string()))?;
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for n in names {
                let f = format!("{}/{}", path.trim_end_matches('/'), n);
                if self.files.insert(f.clone()) {
                    let text = read_text(&f)?;
                    self.read(&text, depth + 1)?;
                } else {
                    (self.warn)(format!(
                        "File {f} already loaded.  Use -IncludeAgain to load it again."
                    ));
                }
            }
            return Ok(());
        }
        if !self.files.insert(path.to_string()) {
            (self.warn)(format!(
                "File {path} already loaded.  Use -IncludeAgain to load it again."
            ));
            return Ok(());
        }
        let text = read_text(path)?;
        self.read(&text, depth + 1)
    }

    /// Config::General's `_read`: comments, continuation lines, `<x/>`, includes.
    fn read(&mut self, text: &str, depth: usize) -> Result<(), ConfError> {
        let mut long: Option<String> = None;
        for raw in text.lines() {
            let line = strip_comment(raw);
            if ends_with_unescaped_backslash(&line) {
                let body = line[..line.len() - 1].trim_start();
                long.get_or_insert_with(String::new).push_str(body);
                continue;
            }
            let t = line.trim();
            if t.starts_with('<') && !t.starts_with("</") && t.ends_with("/>") && t.len() > 3 {
                let inner = &t[1..t.len() - 2];
                let name = inner.split_whitespace().next().unwrap_or("");
                self.lines.push(format!("<{inner}>"));
                self.lines.push(format!("</{name}>"));
                continue;
            }
            if let Some(key) = here_doc(&line) {
                return Err(ConfError::HereDoc(key));
            }
            if let Some(mut l) = long.take() {
                l.push_str(line.trim_start());
                self.lines.push(l);
                continue;
            }
            if t.is_empty() {
                continue;
            }
            match include(&line) {
                Some((optional, file)) => {
                    let file = if optional && !is_glob(&file) {
                        exact_glob(&file)
                    } else {
                        file
                    };
                    self.open(&file, depth)?;
                }
                None => self.lines.push(line.to_string()),
            }
        }
        if let Some(l) = long {
            self.lines.push(l);
        }
        Ok(())
    }
}

fn read_text(path: &str) -> Result<String, ConfError> {
    let b = std::fs::read(path).map_err(|e| ConfError::Unreadable(path.into(), e.to_string()))?;
    let b = b.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&b);
    Ok(String::from_utf8_lossy(b).into_owned())
}

/// `s/(?<!\\)#.*$//`: everything from the first `#` not preceded by a backslash.
fn strip_comment(line: &str) -> String {
    let b = line.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'#' && (i == 0 || b[i - 1] != b'\\') {
            return line[..i].to_string();
        }
    }
    line.to_string()
}

/// `/(?<!\\)\\$/`: a line continued on the next one.
fn ends_with_unescaped_backslash(line: &str) -> bool {
    let b = line.as_bytes();
    b.last() == Some(&b'\\') && (b.len() < 2 || b[b.len() - 2] != b'\\')
}

/// `key <<END` or `key = <<END`: a here-document start, which tgt's files never use.
fn here_doc(line: &str) -> Option<String> {
    let t = line.trim();
    let (key, rest) = if let Some((k, r)) = t.split_once('=') {
        (k.trim(), r.trim_start())
    } else {
        let (k, r) = t.split_once(char::is_whitespace)?;
        (k, r.trim_start())
    };
    let rest = rest.strip_prefix("<<")?;
    (!key.is_empty() && !rest.trim().is_empty() && !key.contains(char::is_whitespace))
        .then(|| key.to_string())
}

/// `include FILE`, `include "FILE"`, `includeoptional ...` (case-insensitive): (optional, FILE).
fn include(line: &str) -> Option<(bool, String)> {
    let t = line.trim_start();
    let lower = t.to_ascii_lowercase();
    let (optional, rest) = if lower.starts_with("includeoptional") {
        (true, &t["includeoptional".len()..])
    } else if lower.starts_with("include") {
        (false, &t["include".len()..])
    } else {
        return None;
    };
    let r = rest.trim_start();
    if let Some(q) = r.chars().next().filter(|c| *c == '"' || *c == '\'') {
        // quoted: the line must end with the closing quote
        let inner = &r[1..];
        if !inner.is_empty() && inner.ends_with(q) && !inner[..inner.len() - 1].ends_with('\\') {
            let f = &inner[..inner.len() - 1];
            return (!f.is_empty()).then(|| (optional, f.to_string()));
        }
    }
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let f = rest.trim();
    (!f.is_empty()).then(|| (optional, f.to_string()))
}

/// `dir/file` as a glob that matches only that file (`dir/[f][i][l][e]`), so a missing
/// optional include is no error.
fn exact_glob(path: &str) -> String {
    let (dir, file) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    let mut s = dir.to_string();
    for c in file.chars() {
        s.push('[');
        s.push(c);
        s.push(']');
    }
    s
}

/// bsd_glob with GLOB_BRACE: `{a,b}` expanded first, then each pattern matched (regular
/// files only, sorted, `*` not matching a leading dot).
fn expand_glob(pattern: &str) -> Result<Vec<String>, ConfError> {
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let mut out = Vec::new();
    for p in expand_braces(pattern) {
        let paths = glob::glob_with(&p, opts)
            .map_err(|e| ConfError::Pattern(pattern.into(), e.to_string()))?;
        let mut found: Vec<String> = paths
            .filter_map(|e| e.ok())
            .filter(|e| e.is_file())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// `a{b,c}d` → `abd`, `acd` (nested braces too); a lone brace is kept as written.
fn expand_braces(p: &str) -> Vec<String> {
    let b = p.as_bytes();
    let Some(open) = p.find('{') else {
        return vec![p.to_string()];
    };
    let mut depth = 0usize;
    let mut commas = Vec::new();
    let mut close = None;
    for (i, &c) in b.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            b',' if depth == 1 => commas.push(i),
            _ => {}
        }
    }
    let Some(close) = close else {
        return vec![p.to_string()];
    };
    let (pre, post) = (&p[..open], &p[close + 1..]);
    let mut starts = vec![open + 1];
    starts.extend(commas.iter().map(|c| c + 1));
    let mut ends = commas.clone();
    ends.push(close);
    let mut out = Vec::new();
    for (s, e) in starts.into_iter().zip(ends) {
        for tail in expand_braces(&format!("{}{}", &p[s..e], post)) {
            out.push(format!("{pre}{tail}"));
        }
    }
    out
}

/// `s/\\([\$\\\"#])/$1/g`: escaped characters left as they are meant.
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut it = v.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\\' {
            if let Some(&n) = it.peek() {
                if matches!(n, '$' | '\\' | '"' | '#') {
                    out.push(n);
                    it.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

/// `split /\s*=\s*|\s+/, $_, 2` on a trimmed line: the key, and the value if any.
fn split_option(line: &str) -> (String, Option<String>) {
    let b = line.as_bytes();
    for i in 0..b.len() {
        if b[i].is_ascii_whitespace() || b[i] == b'=' {
            // at i: `\s*=\s*` if whitespace runs into '=', else `\s+`
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let end = if j < b.len() && b[j] == b'=' {
                let mut k = j + 1;
                while k < b.len() && b[k].is_ascii_whitespace() {
                    k += 1;
                }
                k
            } else {
                j
            };
            return (line[..i].to_string(), Some(line[end..].to_string()));
        }
    }
    (line.to_string(), None)
}

/// `<block>` or `<block name>` (a start line): (block, name).
fn block_start(line: &str) -> Option<(String, Option<String>)> {
    let inner = line.strip_prefix('<')?.strip_suffix('>')?;
    if inner.is_empty() || inner.starts_with('/') {
        return None;
    }
    if let Some(q) = inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        if !q.contains('"') {
            return Some((q.to_string(), None));
        }
    }
    let unquote = |s: &str| -> String {
        match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Some(q) if !q.is_empty() && !q.contains('"') => q.to_string(),
            _ => s.to_string(),
        }
    };
    match inner.split_once(char::is_whitespace) {
        Some((b, n)) => {
            let n = n.trim_start();
            let name = unquote(n);
            // Perl: `$blockname = $3 || $4`, so an empty or "0" name is no name
            let name = (!name.is_empty() && name != "0").then_some(name);
            Some((unquote(b), name))
        }
        None => Some((unquote(inner), None)),
    }
}

/// Adds `key value` to `node` as Config::General does: a second occurrence makes a list.
fn add_option(node: &mut Node, key: String, value: Value) {
    match node.get_mut(&key) {
        None => {
            node.insert(key, value);
        }
        Some(Value::List(l)) => l.push(value),
        Some(old) => {
            let prev = std::mem::replace(old, Value::List(Vec::new()));
            *old = Value::List(vec![prev, value]);
        }
    }
}

/// Config::General's `_parse` over logical lines, into `node` (merging duplicate blocks).
fn parse_into(node: &mut Node, lines: &[String], level: usize) -> Result<(), ConfError> {
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        i += 1;
        if let Some((block, name)) = block_start(line) {
            // find the matching end line, counting nested blocks
            let start = i;
            let mut depth = 0usize;
            let mut end = None;
            while i < lines.len() {
                let l = lines[i].trim();
                if block_start(l).is_some() {
                    depth += 1;
                } else if l.starts_with("</") && l.ends_with('>') && l.len() > 3 {
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                    depth -= 1;
                }
                i += 1;
            }
            let Some(end) = end else {
                return Err(ConfError::Unclosed(block));
            };
            i = end + 1;
            let body = &lines[start..end];
            let slot = node
                .entry(block.clone())
                .or_insert_with(|| Value::Hash(Node::new()));
            let Value::Hash(h) = slot else {
                return match (slot, name) {
                    (Value::List(_), Some(n)) => Err(ConfError::BlockOverList(block, n)),
                    _ => Err(ConfError::BlockOverScalar(block)),
                };
            };
            match name {
                Some(n) => {
                    let inner = h.entry(n).or_insert_with(|| Value::Hash(Node::new()));
                    match inner {
                        Value::Hash(inner) => parse_into(inner, body, level + 1)?,
                        _ => return Err(ConfError::BlockOverScalar(block)),
                    }
                }
                None => parse_into(h, body, level + 1)?,
            }
            continue;
        }
        if let Some(end) = line.strip_prefix("</").and_then(|l| l.strip_suffix('>')) {
            return Err(ConfError::StrayEnd(end.to_string(), level));
        }
        let (key, value) = split_option(line);
        let value = value.map(|v| {
            let v = if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
                v[1..v.len() - 1].to_string()
            } else if v == "\"" {
                String::new()
            } else {
                v
            };
            unescape(&v)
        });
        add_option(node, key, Value::Str(value));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(Some(v.into()))
    }

    #[test]
    fn options_blocks_and_repeats() {
        let n = parse_str(
            "default-driver iscsi # trailing comment\n\
             # a comment line\n\
             <target iqn.a:x>\n  backing-store /a\n  backing-store /b\n  \
             incominguser = u p\n</target>\n<target iqn.a:x>\n  write-cache off\n</target>\n",
        )
        .unwrap();
        assert_eq!(n["default-driver"], s("iscsi"));
        let Value::Hash(t) = &n["target"] else {
            panic!()
        };
        let Value::Hash(x) = &t["iqn.a:x"] else {
            panic!()
        };
        assert_eq!(x["incominguser"], s("u p"));
        assert_eq!(x["write-cache"], s("off"), "duplicate blocks merge");
        assert_eq!(x["backing-store"], Value::List(vec![s("/a"), s("/b")]));
        // a block after repeated values cannot join them; a value after a block can
        assert_eq!(
            parse_str("b /a\nb /b\n<b /c>\n</b>\n"),
            Err(ConfError::BlockOverList("b".into(), "/c".into()))
        );
        let n = parse_str("<b /c>\nlun 1\n</b>\nb /a\n").unwrap();
        let Value::List(l) = &n["b"] else {
            panic!("{n:?}")
        };
        assert!(matches!(&l[..], [Value::Hash(_), Value::Str(_)]));
    }

    #[test]
    fn split_rules_quotes_escapes_continuations() {
        let n = parse_str(
            "a=1\nb = 2\nc  x = y\nparams thin_provisioning=1\nd \"quoted value\"\n\
             e va\\#lue\nf one \\\n   two\ng\n",
        )
        .unwrap();
        assert_eq!(n["a"], s("1"));
        assert_eq!(n["b"], s("2"));
        assert_eq!(n["c"], s("x = y"));
        assert_eq!(n["params"], s("thin_provisioning=1"));
        assert_eq!(n["d"], s("quoted value"));
        assert_eq!(n["e"], s("va#lue"));
        assert_eq!(n["f"], s("one two"));
        assert_eq!(n["g"], Value::Str(None));
    }

    #[test]
    fn block_errors() {
        assert_eq!(
            parse_str("<target x>\nlun 1\n"),
            Err(ConfError::Unclosed("target".into()))
        );
        assert_eq!(
            parse_str("</target>\n"),
            Err(ConfError::StrayEnd("target".into(), 0))
        );
        assert_eq!(
            parse_str("target 1\n<target x>\n</target>\n"),
            Err(ConfError::BlockOverScalar("target".into()))
        );
        assert!(matches!(
            parse_str("k <<EOF\nx\nEOF\n"),
            Err(ConfError::HereDoc(_))
        ));
    }

    #[test]
    fn includes_files_dirs_globs_and_optional() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n).display().to_string();
        std::fs::create_dir(p("conf.d")).unwrap();
        std::fs::write(p("conf.d/b.conf"), "<target t2>\nlun 2\n</target>\n").unwrap();
        std::fs::write(p("conf.d/a.conf"), "<target t1>\nlun 1\n</target>\n").unwrap();
        std::fs::write(p("conf.d/skip.txt"), "from_txt yes\n").unwrap();
        std::fs::write(
            p("main.conf"),
            format!(
                "include {}/conf.d/*.conf\ninclude \"{}\"\nincludeoptional {}/none.conf\n",
                d.path().display(),
                p("conf.d/a.conf"),
                d.path().display()
            ),
        )
        .unwrap();
        let mut warnings = Vec::new();
        let n = parse_file(&p("main.conf"), &mut |w| warnings.push(w)).unwrap();
        let Value::Hash(t) = &n["target"] else {
            panic!()
        };
        assert_eq!(t.keys().collect::<Vec<_>>(), ["t1", "t2"]);
        assert_eq!(warnings.len(), 1, "a.conf read twice: {warnings:?}");
        assert_eq!(
            parse_file(&p("nope.conf"), &mut |_| {}),
            Err(ConfError::Missing(p("nope.conf")))
        );
        std::fs::write(p("dir.conf"), format!("include {}\n", p("conf.d"))).unwrap();
        // a directory: every file in it, whatever its name
        let n = parse_file(&p("dir.conf"), &mut |_| {}).unwrap();
        assert_eq!(n["from_txt"], s("yes"));
    }

    #[test]
    fn braces() {
        assert_eq!(expand_braces("a{b,c}d"), ["abd", "acd"]);
        assert_eq!(expand_braces("{x,y{1,2}}"), ["x", "y1", "y2"]);
        assert_eq!(expand_braces("a{b"), ["a{b"]);
    }
}
