//! What tgtd has now, as tgt-admin learns it: the text of `tgtadm --op show --mode target`
//! cut into one block per target, and the account names of `--op show --mode account`.
//! tgt-admin reads these texts with regular expressions; the readers here follow them.

use std::collections::BTreeMap;

/// Targets by name: their `show` text and tid, and names by tid (tgt-admin's
/// `%tgtadm_output`, `%tgtadm_output_tid`, `%tgtadm_output_name`).
#[derive(Clone, Debug, Default)]
pub struct Targets {
    /// Target name → its lines of `show` output, the `Target N: name` line first.
    pub text: BTreeMap<String, String>,
    /// Target name → tid. tgt-admin also files the tid it chose for a configured target here.
    pub tid: BTreeMap<String, String>,
    /// Tid → target name.
    pub name: BTreeMap<String, String>,
}

/// Perl's numeric value of a string: its leading decimal digits, 0 when there are none.
pub fn perl_num(s: &str) -> i64 {
    let t = s.trim_start();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n = digits
        .parse::<i64>()
        .unwrap_or(if digits.is_empty() { 0 } else { i64::MAX });
    if neg {
        -n
    } else {
        n
    }
}

impl Targets {
    /// Folds `show --mode target` output in (tgt-admin's `process_targets`: earlier entries
    /// stay, a target seen again gets its text replaced).
    pub fn absorb(&mut self, show: &str) {
        let mut current: Option<String> = None;
        for line in show.split_inclusive('\n') {
            if let Some((tid, name)) = target_line(line) {
                self.text.insert(name.clone(), line.to_string());
                self.tid.insert(name.clone(), tid.clone());
                self.name.insert(tid, name.clone());
                current = Some(name);
            } else if let Some(t) = &current {
                self.text.entry(t.clone()).or_default().push_str(line);
            } else {
                // Perl appends to `$tgtadm_output{undef}`, i.e. the target named ""
                self.text.entry(String::new()).or_default().push_str(line);
            }
        }
    }

    /// The largest tid known (tgt-admin's `$largest_tid[$#largest_tid]`), `None` when none.
    pub fn largest_tid(&self) -> Option<i64> {
        self.tid.values().map(|t| perl_num(t)).max()
    }

    /// Target names in tid order (ties by name): the order this tgt-admin walks "all
    /// targets" in, where tgt's walks a Perl hash in no defined order.
    pub fn names_by_tid(&self) -> Vec<String> {
        let mut v: Vec<(i64, String)> = self
            .tid
            .iter()
            .map(|(n, t)| (perl_num(t), n.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, n)| n).collect()
    }

    fn text_of(&self, target: &str) -> &str {
        self.text.get(target).map_or("", String::as_str)
    }

    /// Whether an initiator is connected (`/\s+Connection:/`).
    pub fn connected(&self, target: &str) -> bool {
        has_ws_prefixed(self.text_of(target), "Connection:")
    }

    /// `Driver: X`.
    pub fn driver(&self, target: &str) -> Option<String> {
        field_lines(self.text_of(target), "Driver: ")
            .into_iter()
            .next()
    }

    /// Every `Backing store path:` other than `None`.
    pub fn backing_stores(&self, target: &str) -> Vec<String> {
        field_lines(self.text_of(target), "Backing store path: ")
            .into_iter()
            .filter(|p| p != "None")
            .collect()
    }

    /// The lines between `Account information:` and `ACL information:`, unindented.
    pub fn accounts(&self, target: &str) -> Option<Vec<String>> {
        let t = self.text_of(target);
        let start = t.find("Account information:\n")? + "Account information:\n".len();
        let end = t.rfind("ACL information:")?;
        // `(.*)\n\s+ACL information:`: the text up to the newline before the indentation
        let head = t.get(start..end)?.trim_end_matches([' ', '\t']);
        let body = head.strip_suffix('\n')?;
        Some(body.split('\n').map(unindent).collect())
    }

    /// The lines after `ACL information:`, unindented.
    pub fn acls(&self, target: &str) -> Vec<String> {
        let t = self.text_of(target);
        let Some(i) = t.find("ACL information:\n") else {
            return Vec::new();
        };
        if i == 0 || !t[..i].ends_with(char::is_whitespace) {
            return Vec::new();
        }
        let mut lines: Vec<&str> = t[i + "ACL information:\n".len()..].split('\n').collect();
        while lines.last() == Some(&"") {
            lines.pop();
        }
        lines.into_iter().map(unindent).collect()
    }

    /// I_T nexus → its (last) connection id, from the I_T nexus section.
    pub fn sessions(&self, target: &str) -> Vec<(String, String)> {
        let t = self.text_of(target);
        let (Some(a), Some(b)) = (
            t.find("I_T nexus information:\n"),
            t.rfind("LUN information:"),
        ) else {
            return Vec::new();
        };
        let Some(body) = t.get(a + "I_T nexus information:\n".len()..b) else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = Vec::new();
        let mut sid = String::new();
        for line in body.split('\n') {
            if let Some(s) = ws_field(line, "I_T nexus: ") {
                sid = s;
            } else if let Some(c) = ws_field(line, "Connection: ") {
                match out.iter_mut().find(|(s, _)| *s == sid) {
                    Some(e) => e.1 = c,
                    None => out.push((sid.clone(), c)),
                }
            }
        }
        out
    }
}

/// `^Target (\d*): (.+)`.
fn target_line(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("Target ")?;
    let colon = rest.find(": ")?;
    let tid = &rest[..colon];
    if !tid.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let name = rest[colon + 2..].trim_end_matches('\n');
    (!name.is_empty()).then(|| (tid.to_string(), name.to_string()))
}

/// `\s+KEY(.+)` anywhere in `text`: the rest of each such line.
fn field_lines(text: &str, key: &str) -> Vec<String> {
    text.split('\n').filter_map(|l| ws_field(l, key)).collect()
}

/// The rest of `line` after whitespace and `key`, when it is non-empty.
fn ws_field(line: &str, key: &str) -> Option<String> {
    let i = line.find(key)?;
    if i == 0 || !line[..i].ends_with(char::is_whitespace) {
        return None;
    }
    let v = &line[i + key.len()..];
    (!v.is_empty()).then(|| v.to_string())
}

fn has_ws_prefixed(text: &str, key: &str) -> bool {
    text.match_indices(key)
        .any(|(i, _)| i > 0 && text[..i].ends_with(char::is_whitespace))
}

/// `split(/^\s+/, $line)` then `[1]`: the line without its indentation ("" when none).
fn unindent(line: &str) -> String {
    let t = line.trim_start();
    if t.len() == line.len() {
        String::new()
    } else {
        t.to_string()
    }
}

/// Account names: every indented line of `show --mode account` (`^\s+(.*?)$`).
pub fn account_names(show: &str) -> Vec<String> {
    show.lines()
        .filter(|l| l.starts_with(char::is_whitespace))
        .map(|l| l.trim_start().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "Target 1: iqn.a:one\n    System information:\n        Driver: iscsi\n        State: ready\n    I_T nexus information:\n        I_T nexus: 3\n            Initiator: iqn.i alias: none\n            Connection: 0\n                IP Address: 127.0.0.1\n    LUN information:\n        LUN: 0\n            Backing store path: None\n        LUN: 1\n            Backing store path: /tmp/d1\n    Account information:\n        alice\n        bob (outgoing)\n    ACL information:\n        ALL\n        iqn.x\nTarget 4: iqn.a:two\n    System information:\n        Driver: iser\n    I_T nexus information:\n    LUN information:\n    Account information:\n    ACL information:\n";

    #[test]
    fn reads_show_output_as_tgt_admin_does() {
        let mut t = Targets::default();
        t.absorb(SHOW);
        assert_eq!(t.tid["iqn.a:one"], "1");
        assert_eq!(t.name["4"], "iqn.a:two");
        assert_eq!(t.largest_tid(), Some(4));
        assert!(t.connected("iqn.a:one"));
        assert!(!t.connected("iqn.a:two"));
        assert_eq!(t.driver("iqn.a:two").as_deref(), Some("iser"));
        assert_eq!(t.backing_stores("iqn.a:one"), ["/tmp/d1"]);
        assert_eq!(
            t.accounts("iqn.a:one").unwrap(),
            ["alice", "bob (outgoing)"]
        );
        assert_eq!(t.acls("iqn.a:one"), ["ALL", "iqn.x"]);
        assert_eq!(t.acls("iqn.a:two"), Vec::<String>::new());
        assert_eq!(t.sessions("iqn.a:one"), [("3".into(), "0".into())]);
        assert_eq!(t.names_by_tid(), ["iqn.a:one", "iqn.a:two"]);
    }

    #[test]
    fn account_list() {
        assert_eq!(
            account_names("Account list:\n    alice\n    bob\n"),
            ["alice", "bob"]
        );
        assert_eq!(perl_num("12abc"), 12);
        assert_eq!(perl_num("x"), 0);
    }
}
