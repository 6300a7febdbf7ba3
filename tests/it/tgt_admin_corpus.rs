//! Our `tgt-admin` against Debian's (tgt's Perl tool, /usr/sbin/tgt-admin) on a corpus of
//! targets.conf files (tests/tgt-admin-corpus/, issue 12 item 3). For each file, against
//! fresh private tgtds of ours:
//! - `-p -e` (pretend): the same lines (tgtadm calls and comments) in the same order, and
//!   the same exit status;
//! - `-v -e` on a fresh tgtd each: the same lines and status, then the same
//!   `tgtadm --op show --mode target` and `--mode account`;
//! - on the configured tgtd: `-p -e` again (targets exist), `-p --update ALL`,
//!   `-p --offline ALL`, `-p --delete ALL`, and `--dump`, each the same.
//!
//! Debian's tool runs with Debian's tgtadm first on PATH; ours calls our tgtadm client
//! in-process. Where tgt's tool walks a Perl hash its order is arbitrary, so those outputs
//! are compared in a canonical order (see `canonical`): the LU parameters that follow one
//! `--op new --mode logicalunit` (mode pages still first), the per-target groups of the ALL
//! operations, and the `--dump` target blocks.

use crate::admin;
use admin::{
    normalize, require, require_debian_tgt, Daemon, Impl, DEBIAN_TGTADM, DEBIAN_TGT_ADMIN,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const OURS: &str = env!("CARGO_BIN_EXE_tgt-admin");

/// What one tgt-admin run printed and returned.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    rc: i32,
    out: String,
}

/// The corpus copied into `dir` with `@DIR@` replaced by it, and the backing files made.
fn stage(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tgt-admin-corpus");
    copy_tree(&src, dir, dir);
    for i in 1..=8 {
        std::fs::File::create(dir.join(format!("d{i}")))
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
    }
}

fn copy_tree(from: &Path, to: &Path, root: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &dst, root);
        } else {
            let text = std::fs::read_to_string(e.path()).unwrap();
            std::fs::write(&dst, text.replace("@DIR@", &root.display().to_string())).unwrap();
        }
    }
}

/// Runs Debian's tgt-admin (`Impl::Debian`) or ours against `d`.
fn tgt_admin(who: Impl, d: &Daemon, bin: &Path, args: &[&str]) -> Run {
    let prog = match who {
        Impl::Debian => DEBIAN_TGT_ADMIN,
        Impl::Ours => OURS,
    };
    let o = Command::new(prog)
        .args(["-C", &d.ctl.to_string()])
        .args(args)
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin:/usr/sbin:/sbin", bin.display()),
        )
        .env("TGT_IPC_SOCKET", d.socket_base())
        .env("PERL_HASH_SEED", "0")
        .env("PERL_PERTURB_KEYS", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {prog}: {e}"));
    Run {
        rc: o.status.code().unwrap_or(-1),
        out: normalize(&String::from_utf8_lossy(&o.stdout), d)
            .replace(&format!("-C {} ", d.ctl), "-C $CTL "),
    }
}

fn is_lu_param(l: &str) -> bool {
    l.contains("--op update --mode logicalunit")
        || l.starts_with("# Write cache is enabled")
        || l.starts_with("# WARNING! Unknown value")
}

/// tgt-admin's output in an order that does not depend on Perl's hash order: each run of LU
/// parameter lines after an `--op new --mode logicalunit` sorted (mode pages kept first);
/// with `groups`, the blank-line-separated groups sorted too (ALL operations, --dump).
fn canonical(s: &str, groups: bool) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        out.push(lines[i].to_string());
        if lines[i].contains("--op new --mode logicalunit") {
            let mut run: Vec<&str> = Vec::new();
            while i + 1 < lines.len() && is_lu_param(lines[i + 1]) {
                i += 1;
                run.push(lines[i]);
            }
            run.sort_by_key(|l| (!l.contains("params mode_page"), *l));
            out.extend(run.into_iter().map(String::from));
        }
        i += 1;
    }
    if !groups {
        return out.join("\n");
    }
    // groups: the lines between blank lines (the blank lines themselves are separators, and
    // which group a trailing one follows depends on the order)
    let text = out.join("\n");
    let mut g: Vec<&str> = text
        .split("\n\n")
        .map(|x| x.trim_matches('\n'))
        .filter(|x| !x.is_empty())
        .collect();
    g.sort();
    g.join("\n\n")
}

/// Also sorts single lines (`--offline ALL` prints one line per target, in hash order).
fn sorted_lines(s: &str) -> String {
    let mut l: Vec<&str> = s.lines().collect();
    l.sort();
    l.join("\n")
}

fn show(d: &Daemon) -> String {
    let t = d.tgtadm_ok(Impl::Debian, &["--op", "show", "--mode", "target"]);
    let a = d.tgtadm_ok(Impl::Debian, &["--op", "show", "--mode", "account"]);
    normalize(&format!("{t}{a}"), d)
}

/// Compares one corpus file; returns what differed.
fn check(name: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path());
    let bin: PathBuf = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(DEBIAN_TGTADM, bin.join("tgtadm")).unwrap();
    let conf = dir.path().join(format!("{name}.conf"));
    let conf = conf.to_str().unwrap();
    let mut diffs = Vec::new();
    let same =
        |diffs: &mut Vec<String>, what: &str, deb: &Run, ours: &Run, f: &dyn Fn(&str) -> String| {
            let (a, b) = (f(&deb.out), f(&ours.out));
            if deb.rc != ours.rc || a != b {
                diffs.push(format!(
                    "{name}: {what}: Debian rc {} vs ours rc {}\n--- Debian:\n{a}\n--- ours:\n{b}",
                    deb.rc, ours.rc
                ));
            }
        };
    let plain = |s: &str| canonical(s, false);
    let grouped = |s: &str| canonical(s, true);
    let dir_s = dir.path().display().to_string();
    let undir = |s: &str| canonical(&s.replace(&dir_s, "$DIR"), false);

    // Pretend, against one fresh tgtd.
    let d = Daemon::start(Impl::Ours);
    let deb = tgt_admin(Impl::Debian, &d, &bin, &["-p", "-e", "-c", conf]);
    let ours = tgt_admin(Impl::Ours, &d, &bin, &["-p", "-e", "-c", conf]);
    same(&mut diffs, "-p -e", &deb, &ours, &plain);
    assert!(
        deb.out.contains("tgtadm") || deb.rc != 0,
        "{name}: Debian's tgt-admin printed no tgtadm call: {deb:?}"
    );

    // Execute on two fresh tgtds, one after the other (each holds the backing files open).
    let deb_e = tgt_admin(Impl::Debian, &d, &bin, &["-v", "-e", "-c", conf]);
    let deb_show = show(&d);
    drop(d);
    let d = Daemon::start(Impl::Ours);
    let ours_e = tgt_admin(Impl::Ours, &d, &bin, &["-v", "-e", "-c", conf]);
    same(&mut diffs, "-v -e", &deb_e, &ours_e, &plain);
    let ours_show = show(&d);
    if deb_show != ours_show {
        diffs.push(format!(
            "{name}: show after -e differs\n--- Debian's tgt-admin:\n{deb_show}\n--- ours:\n{ours_show}"
        ));
    }

    // On the configured tgtd.
    for (what, args, f) in [
        (
            "-p -e (again)",
            vec!["-p", "-e", "-c", conf],
            &plain as &dyn Fn(&str) -> String,
        ),
        (
            "-p --update ALL",
            vec!["-p", "--update", "ALL", "-c", conf],
            &plain,
        ),
        (
            "-p --offline ALL",
            vec!["-p", "--offline", "ALL"],
            &|s: &str| sorted_lines(s),
        ),
        ("-p --delete ALL", vec!["-p", "--delete", "ALL"], &grouped),
        ("--dump", vec!["--dump"], &grouped),
    ] {
        let deb = tgt_admin(Impl::Debian, &d, &bin, &args);
        let ours = tgt_admin(Impl::Ours, &d, &bin, &args);
        same(&mut diffs, what, &deb, &ours, &|s| f(&undir(s)));
    }
    diffs
}

macro_rules! corpus {
    ($($t:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $t() {
                require_debian_tgt();
                require(DEBIAN_TGT_ADMIN, "tgt");
                require("perl", "perl");
                require("lsof", "lsof");
                let diffs = check($name);
                assert!(diffs.is_empty(), "{}", diffs.join("\n\n"));
            }
        )*

        /// Every file of the corpus has its test above.
        #[test]
        fn corpus_is_covered() {
            let names = [$($name),*];
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tgt-admin-corpus");
            let mut n = 0;
            for e in std::fs::read_dir(dir).unwrap() {
                let f = e.unwrap().file_name().to_string_lossy().into_owned();
                if let Some(stem) = f.strip_suffix(".conf") {
                    assert!(names.contains(&stem), "{f} has no test in tgt_admin_corpus.rs");
                    n += 1;
                }
            }
            assert_eq!(n, names.len());
        }
    };
}

corpus! {
    c01_minimal => "01-minimal",
    c02_luns => "02-luns",
    c03_acl => "03-acl",
    c04_chap => "04-chap",
    c05_target_params => "05-target-params",
    c06_write_cache => "06-write-cache",
    c07_bs_type => "07-bs-type",
    c08_lu_params => "08-lu-params",
    c09_include => "09-include",
    c10_in_use => "10-in-use",
    c11_syntax => "11-syntax",
    c12_discovery_and_state => "12-discovery-and-state",
    c13_error_missing_value => "13-error-missing-value",
    c14_error_duplicate => "14-error-duplicate",
    c15_error_tgtadm_fails => "15-error-tgtadm-fails",
    c16_direct_store => "16-direct-store",
    c17_error_block_after_value => "17-error-block-after-value",
}

#[test]
fn canonical_order_only_hides_hash_order() {
    let a = "x\ntgtadm --op new --mode logicalunit\ntgtadm --op update --mode logicalunit b\n\
             tgtadm --op update --mode logicalunit --params mode_page=1\nafter";
    let c = canonical(a, false);
    assert_eq!(
        c,
        "x\ntgtadm --op new --mode logicalunit\n\
         tgtadm --op update --mode logicalunit --params mode_page=1\n\
         tgtadm --op update --mode logicalunit b\nafter"
    );
    assert_ne!(canonical("a\nb", false), canonical("b\na", false));
}

/// Runs each argument list through both tools against `d` and lists what differed.
fn compare_runs(d: &Daemon, bin: &Path, dir: &Path, runs: &[Vec<&str>]) -> Vec<String> {
    let dir_s = dir.display().to_string();
    let mut diffs = Vec::new();
    for args in runs {
        let deb = tgt_admin(Impl::Debian, d, bin, args);
        let ours = tgt_admin(Impl::Ours, d, bin, args);
        let f = |s: &str| canonical(&s.replace(&dir_s, "$DIR"), true);
        if deb.rc != ours.rc || f(&deb.out) != f(&ours.out) {
            diffs.push(format!(
                "{args:?}: Debian rc {} vs ours rc {}\n--- Debian:\n{}\n--- ours:\n{}",
                deb.rc,
                ours.rc,
                f(&deb.out),
                f(&ours.out)
            ));
        }
    }
    diffs
}

/// A tgtd configured from 03-acl.conf by our tgt-admin.
fn configured(name: &str) -> (tempfile::TempDir, PathBuf, Daemon, String) {
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path());
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(DEBIAN_TGTADM, bin.join("tgtadm")).unwrap();
    let conf = dir
        .path()
        .join(format!("{name}.conf"))
        .display()
        .to_string();
    let d = Daemon::start(Impl::Ours);
    let r = tgt_admin(Impl::Ours, &d, &bin, &["-e", "-c", &conf]);
    assert_eq!(r.rc, 0, "tgt-admin -e {conf}: {}", r.out);
    (dir, bin, d, conf)
}

fn require_all() {
    require_debian_tgt();
    require(DEBIAN_TGT_ADMIN, "tgt");
    require("perl", "perl");
    require("lsof", "lsof");
}

/// --update/--delete/--offline/--ready on one target (by name and by tid), the help texts,
/// unknown targets, -s, and no action: the same as Debian's tool.
#[test]
fn single_target_operations_match() {
    require_all();
    let (dir, bin, d, conf) = configured("03-acl");
    let byname = "iqn.2026-11.io.curve-tgt:byname";
    // files Config::General refuses: an unclosed block, a missing include, a stray end
    let bad: Vec<String> = [
        "<target x>\nlun 1\n",
        "include /nonexistent/file.conf\n",
        "</target>\n",
    ]
    .iter()
    .enumerate()
    .map(|(i, text)| {
        let p = dir.path().join(format!("bad{i}.conf"));
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    })
    .collect();
    let runs: Vec<Vec<&str>> = vec![
        vec!["-p", "-e", "-c", &bad[0]],
        vec!["-p", "-e", "-c", &bad[1]],
        vec!["-p", "-e", "-c", &bad[2]],
        vec!["-p", "--update", byname, "-c", &conf],
        vec!["-p", "--update", "tid=2", "-c", &conf],
        vec!["-p", "--update", "tid=9", "-c", &conf],
        vec![
            "-p",
            "--update",
            "iqn.2026-11.io.curve-tgt:nope",
            "-c",
            &conf,
        ],
        vec!["-p", "--delete", "tid=1"],
        vec!["-p", "--delete", "tid=9"],
        vec!["-p", "--delete", byname],
        vec!["-p", "--delete", "iqn.2026-11.io.curve-tgt:nope"],
        vec!["-p", "--offline", byname],
        vec!["-p", "--ready", "tid=3"],
        vec!["-p", "--offline", "iqn.2026-11.io.curve-tgt:nope"],
        vec!["--offline", "tid=1", "--ready", "tid=1"],
        vec!["--delete", "help"],
        vec!["--update", "help"],
        vec!["--offline", "help"],
        vec!["--ready", "help"],
        vec!["-p", "-s"],
        vec!["-s"],
        vec!["-p"],
        vec!["-p", "-e", "-c", "/nonexistent.conf"],
    ];
    let diffs = compare_runs(&d, &bin, dir.path(), &runs);
    assert!(diffs.is_empty(), "{}", diffs.join("\n\n"));

    // Really run: update one target by name (it keeps its tid: targets are numbered in name
    // order, both=1, byaddr=2, byname=3), take another offline, delete a third.
    for args in [
        vec!["-v", "--update", byname, "-c", &conf],
        vec!["-v", "--offline", "tid=2"],
        vec!["-v", "--delete", "iqn.2026-11.io.curve-tgt:both"],
    ] {
        let r = tgt_admin(Impl::Ours, &d, &bin, &args);
        assert_eq!(r.rc, 0, "{args:?}: {}", r.out);
    }
    let s = show(&d);
    assert!(s.contains(&format!("Target 3: {byname}")), "{s}");
    assert!(!s.contains("curve-tgt:both"), "{s}");
    let t2 = d.tgtadm_ok(Impl::Debian, &["--op", "show", "--mode", "target"]);
    assert!(
        t2.contains("Target 2: iqn.2026-11.io.curve-tgt:byaddr\n    System information:\n        Driver: iscsi\n        State: offline"),
        "{t2}"
    );
}

/// A target with an initiator logged in is left alone by --delete and --update unless
/// --force; forced, its ACLs are unbound and its connection closed first.
#[test]
fn connected_targets_match() {
    require_all();
    let (dir, bin, d, conf) = configured("04-chap");
    // chap1 needs CHAP; log in to a target of its own without it.
    let open = "iqn.2026-11.io.curve-tgt:open";
    let t = |a: &[&str]| d.tgtadm_ok(Impl::Debian, a);
    t(&["--op", "new", "--mode", "target", "--tid", "5", "-T", open]);
    t(&[
        "--op", "bind", "--mode", "target", "--tid", "5", "-I", "ALL",
    ]);
    let ini = admin::Initiator::login(d.port, "iqn.1994-05.com.example:held", open)
        .expect("login to the open target");
    let runs: Vec<Vec<&str>> = vec![
        vec!["-p", "--delete", "ALL"],
        vec!["-p", "--delete", open],
        vec!["-p", "-f", "--delete", open],
        vec!["-p", "--update", "ALL", "-c", &conf],
        vec!["-p", "-f", "--update", "ALL", "-c", &conf],
        vec!["-p", "-e", "-c", &conf],
        vec!["--dump"],
    ];
    let diffs = compare_runs(&d, &bin, dir.path(), &runs);
    assert!(diffs.is_empty(), "{}", diffs.join("\n\n"));

    let r = tgt_admin(Impl::Ours, &d, &bin, &["-v", "--delete", open]);
    assert_eq!(r.rc, 0, "{}", r.out);
    assert!(
        r.out.contains("is in use, it won't be deleted."),
        "{}",
        r.out
    );
    assert!(show(&d).contains(open));
    let r = tgt_admin(Impl::Ours, &d, &bin, &["-v", "-f", "--delete", open]);
    assert_eq!(r.rc, 0, "{}", r.out);
    assert!(
        r.out.contains("--op delete --mode conn --tid 5"),
        "{}",
        r.out
    );
    assert!(!show(&d).contains(open));
    drop(ini);
}

/// The reload path of tgt's service (`--update ALL` after the file changed: a target gone,
/// one changed, one new) and its stop path (`--offline ALL`, then `--update ALL -c /dev/null
/// -f`), each run by both tools on tgtds configured alike: the same calls and the same show.
#[test]
fn update_after_edit_matches() {
    require_all();
    let edited = |dir: &Path| -> String {
        let p = dir.join("edited.conf");
        let d = dir.display();
        std::fs::write(
            &p,
            format!(
                "default-driver iscsi\n\
                 <target iqn.2026-11.io.curve-tgt:byaddr>\n    backing-store {d}/d1\n    \
                 backing-store {d}/d4\n    initiator-address 127.0.0.1\n</target>\n\
                 <target iqn.2026-11.io.curve-tgt:both>\n    backing-store {d}/d3\n    \
                 initiator-name iqn.1994-05.com.example:one\n    \
                 initiator-address 127.0.0.1\n</target>\n\
                 <target iqn.2026-11.io.curve-tgt:new>\n    backing-store {d}/d5\n    \
                 incominguser newuser newsecret1234\n</target>\n"
            ),
        )
        .unwrap();
        p.display().to_string()
    };
    let mut shows = Vec::new();
    let mut diffs = Vec::new();
    for who in [Impl::Debian, Impl::Ours] {
        let (dir, bin, d, _conf) = configured("03-acl");
        let new = edited(dir.path());
        if who == Impl::Debian {
            diffs.extend(compare_runs(
                &d,
                &bin,
                dir.path(),
                &[
                    vec!["-p", "--update", "ALL", "-c", &new],
                    vec!["-p", "--update", "ALL", "-c", "/dev/null", "-f"],
                ],
            ));
        }
        let dir_s = dir.path().display().to_string();
        let mut outs = Vec::new();
        for args in [
            vec!["-v", "--update", "ALL", "-c", &new],
            vec!["-v", "--offline", "ALL"],
        ] {
            let r = tgt_admin(who, &d, &bin, &args);
            // (--offline ALL prints one line per target, in Perl hash order for Debian's)
            outs.push((
                r.rc,
                sorted_lines(&canonical(&r.out.replace(&dir_s, "$DIR"), true)),
            ));
        }
        outs.push((0, show(&d).replace(&dir_s, "$DIR")));
        let r = tgt_admin(
            who,
            &d,
            &bin,
            &["-v", "--update", "ALL", "-c", "/dev/null", "-f"],
        );
        outs.push((r.rc, canonical(&r.out.replace(&dir_s, "$DIR"), true)));
        outs.push((0, show(&d)));
        shows.push(outs);
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n\n"));
    for (i, (deb, ours)) in shows[0].iter().zip(&shows[1]).enumerate() {
        assert_eq!(deb, ours, "step {i} differs (Debian's tool, then ours)");
    }
    let after_update = &shows[1][2].1;
    assert!(after_update.contains("curve-tgt:new"), "{after_update}");
    assert!(!after_update.contains("curve-tgt:byname"), "{after_update}");
    assert!(after_update.contains("$DIR/d4"), "{after_update}");
    assert!(after_update.contains("State: offline"), "{after_update}");
    assert_eq!(shows[1][4].1.lines().next(), Some("Account list:"));
}

/// Our reading of a file, as JSON in JSON::PP's canonical form (keys sorted, undef → null).
fn to_json(v: &general::Value) -> String {
    fn s(out: &mut String, t: &str) {
        out.push('"');
        for c in t.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    fn go(out: &mut String, v: &general::Value) {
        match v {
            general::Value::Str(None) => out.push_str("null"),
            general::Value::Str(Some(t)) => s(out, t),
            general::Value::List(l) => {
                out.push('[');
                for (i, x) in l.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    go(out, x);
                }
                out.push(']');
            }
            general::Value::Hash(h) => {
                out.push('{');
                for (i, (k, x)) in h.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    s(out, k);
                    out.push(':');
                    go(out, x);
                }
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    go(&mut out, v);
    out
}

/// Config::General's reading of `path` with tgt-admin's options, as canonical JSON; `None`
/// when it refuses the file.
fn perl_reading(path: &Path) -> Option<String> {
    let script = "use Config::General qw(ParseConfig); use JSON::PP; \
        my %c = ParseConfig(-ConfigFile => $ARGV[0], -UseApacheInclude => 1, \
        -IncludeDirectories => 1, -IncludeGlob => 1, -MergeDuplicateBlocks => 1); \
        print JSON::PP->new->canonical->encode(\\%c);";
    let o = Command::new("perl")
        .args(["-e", script, path.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .expect("run perl");
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

use curve_tgt::mgmt::targets_conf::general;

/// The parser reads every corpus file, and a set of syntax corner cases, into the same tree
/// as Perl's Config::General (with tgt-admin's options), and refuses the same files.
#[test]
fn parser_matches_config_general() {
    require("perl", "perl");
    require(
        "/usr/share/perl5/Config/General.pm",
        "libconfig-general-perl",
    );
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path());
    let corner_cases = [
        "<target \"iqn.a:quoted\">\n  vendor_id \"va\"lue\"\n  product_id = \"x y\"  \n  \
         product_rev ab\\\"c\n  scsi_sn a\\\\b\n  scsi_id  two  spaces\n</target>\n",
        "<target iqn.a:eq>\n  <backing-store /x>\n    lun=3\n    vendor_id=v=1\n    \
         params   a=1,b=2\n    params c=3\n  </backing-store>\n  initiator-address=1.2.3.4\n\
         </target>\n<target iqn.a:eq>\n  lun 4\n</target>\n",
        "a b # comment\nc d\\#e\nf g \\\n   h\\\n i\nempty\n  <blk>\n k v\n </blk>\n",
        "<target t>\n  <backing-store /d1>\n  </backing-store>\n  backing-store /d2\n</target>\n",
        "<target t>\n backing-store /d1\n <backing-store /d2>\n </backing-store>\n</target>\n",
        "<target iqn.e:y/>\nx 1\n",
        "<target x>\nlun 1\n",
        "</target>\n",
        "key = \"\"\nk2 \"\nk3 'single'\n",
        "Include /nonexistent/file.conf\n",
    ];
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    for (i, text) in corner_cases.iter().enumerate() {
        let p = dir.path().join(format!("corner{i}.txt"));
        std::fs::write(&p, text).unwrap();
        files.push(p);
    }
    files.sort();
    let mut diffs = Vec::new();
    for f in &files {
        let want = perl_reading(f);
        let got = general::parse_file(f.to_str().unwrap(), &mut |_| {})
            .ok()
            .map(|n| to_json(&general::Value::Hash(n)));
        if want != got {
            diffs.push(format!(
                "{}:\n  Config::General: {want:?}\n  ours:            {got:?}",
                f.display()
            ));
        }
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
