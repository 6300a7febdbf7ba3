//! tgt-admin builds each tgtadm call as one shell line (`-b "/path"`, `--params k="v"`) and
//! runs it with Perl's `system`; it prints that same line for `-v` and `-p`. We print the
//! line as it does, and split it into argv here, as the shell would, without running a shell
//! (no variable, command or glob expansion: a value is passed as written).

/// The words of `line`: blanks separate them; `"..."` (with `\"`, `\\`, `\$`, `` \` ``
/// escapes), `'...'` and `\x` quote.
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut it = line.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '"' => {
                in_word = true;
                while let Some(d) = it.next() {
                    match d {
                        '"' => break,
                        '\\' if matches!(it.peek(), Some('"' | '\\' | '$' | '`')) => {
                            cur.push(it.next().unwrap_or('\\'));
                        }
                        _ => cur.push(d),
                    }
                }
            }
            '\'' => {
                in_word = true;
                for d in it.by_ref() {
                    if d == '\'' {
                        break;
                    }
                    cur.push(d);
                }
            }
            '\\' => {
                in_word = true;
                if let Some(d) = it.next() {
                    cur.push(d);
                }
            }
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn splits_like_sh() {
        assert_eq!(
            split_words(
                "tgtadm -C 0 --op new -b \"/a b/c\"     --params mode_page=\"8:0\" x\\ y ''"
            ),
            [
                "tgtadm",
                "-C",
                "0",
                "--op",
                "new",
                "-b",
                "/a b/c",
                "--params",
                "mode_page=8:0",
                "x y",
                ""
            ]
        );
        assert_eq!(split_words("a \"q\\\"x\" 'l\\n'"), ["a", "q\"x", "l\\n"]);
        assert!(split_words("   ").is_empty());
    }
}
