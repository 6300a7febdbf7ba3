//! tgt-admin's command line, parsed as Perl's Getopt::Long parses it for tgt's tool: `-x`
//! and `--x` alike, case-sensitive names, unique abbreviations (`--exec`), values as the next
//! word or after `=`, unknown options reported and skipped, other words ignored.

use super::admin::Options;

/// (names, takes a value)
const SPEC: &[(&[&str], bool)] = &[
    (&["e", "execute"], false),
    (&["delete"], true),
    (&["offline"], true),
    (&["ready"], true),
    (&["update"], true),
    (&["s", "show"], false),
    (&["c", "conf"], true),
    (&["ignore-errors"], false),
    (&["f", "force"], false),
    (&["p", "pretend"], false),
    (&["dump"], false),
    (&["v", "verbose"], false),
    (&["h", "help"], false),
    (&["C", "control-port"], true),
];

/// The parsed options and the warnings Getopt::Long would print (it goes on regardless).
pub fn parse(args: &[String]) -> (Options, Vec<String>) {
    let mut o = Options {
        control_port: "0".into(),
        ..Options::default()
    };
    let mut warnings = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            break;
        }
        let body = match a.strip_prefix("--").or_else(|| a.strip_prefix('-')) {
            Some(b) if !b.is_empty() => b,
            _ => continue,
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let exact = SPEC.iter().find(|(ns, _)| ns.contains(&name));
        let cands: Vec<&(&[&str], bool)> = SPEC
            .iter()
            .filter(|(ns, _)| ns.iter().any(|n| n.starts_with(name)))
            .collect();
        let (names, takes) = match (exact, cands.as_slice()) {
            (Some(e), _) => *e,
            (None, [one]) => **one,
            (None, []) => {
                warnings.push(format!("Unknown option: {name}"));
                continue;
            }
            (None, many) => {
                let l: Vec<&str> = many
                    .iter()
                    .map(|(ns, _)| *ns.last().unwrap_or(&""))
                    .collect();
                warnings.push(format!("Option {name} is ambiguous ({})", l.join(", ")));
                continue;
            }
        };
        let key = names.last().copied().unwrap_or_default();
        let value = if takes {
            match inline.or_else(|| {
                let v = args.get(i).cloned();
                if v.is_some() {
                    i += 1;
                }
                v
            }) {
                Some(v) => Some(v),
                None => {
                    warnings.push(format!("Option {name} requires an argument"));
                    continue;
                }
            }
        } else {
            if inline.is_some() {
                warnings.push(format!("Option {name} does not take an argument"));
                continue;
            }
            None
        };
        match key {
            "execute" => o.execute = true,
            "delete" => o.delete = value,
            "offline" => o.offline = value,
            "ready" => o.ready = value,
            "update" => o.update = value,
            "show" => o.show = true,
            "conf" => o.conf = value,
            "ignore-errors" => o.ignore_errors = true,
            "force" => o.force = true,
            "pretend" => o.pretend = true,
            "dump" => o.dump = true,
            "verbose" => o.verbose = true,
            "help" => o.help = true,
            "control-port" => o.control_port = value.unwrap_or_default(),
            _ => {}
        }
    }
    (o, warnings)
}

/// `tgt-admin --help`.
pub fn usage() -> String {
    format!(
        "Usage: tgt-admin [OPTION]...\n\
         Applies a tgt targets.conf to a running tgtd (curve-tgt {}, tgt-admin compatible).\n\
         \n\
         \x20 -e, --execute            read {} and apply it\n\
         \x20     --delete <value>     delete all or selected targets (--delete help)\n\
         \x20     --offline <value>    put all or selected targets offline (--offline help)\n\
         \x20     --ready <value>      put all or selected targets in ready state (--ready help)\n\
         \x20     --update <value>     re-apply the file to all or selected targets (--update help)\n\
         \x20 -s, --show               show all the targets\n\
         \x20 -C, --control-port <N>   the control port of the tgtd to configure\n\
         \x20 -c, --conf <file>        read this file instead\n\
         \x20     --ignore-errors      go on when a tgtadm call fails\n\
         \x20 -f, --force              also act on targets and devices in use\n\
         \x20 -p, --pretend            only print the tgtadm calls\n\
         \x20     --dump               print the running configuration as a targets.conf\n\
         \x20 -v, --verbose            print each tgtadm call before it runs\n\
         \x20 -h, --help               show this help\n",
        env!("CARGO_PKG_VERSION"),
        super::admin::DEFAULT_CONF
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> (Options, Vec<String>) {
        parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn getopt_long_rules() {
        let (o, w) = p(&["-e", "-c", "/x.conf", "--control-port=7", "-v", "stray"]);
        assert!(o.execute && o.verbose && w.is_empty());
        assert_eq!(o.conf.as_deref(), Some("/x.conf"));
        assert_eq!(o.control_port, "7");
        let (o, _) = p(&["--exec", "--upd", "ALL", "-C", "3", "-f"]);
        assert!(o.execute && o.force);
        assert_eq!(o.update.as_deref(), Some("ALL"));
        assert_eq!(o.control_port, "3");
        let (o, w) = p(&["--d", "-x", "--offline"]);
        assert_eq!(
            w,
            [
                "Option d is ambiguous (delete, dump)",
                "Unknown option: x",
                "Option offline requires an argument"
            ]
        );
        assert!(o.delete.is_none() && !o.dump);
        assert_eq!(p(&[]).0.control_port, "0");
    }
}
