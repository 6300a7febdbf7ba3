//! tgt-admin runs against a scripted tgtadm: the lines `-p` prints, the argv `-e` passes,
//! and what a failed call does, without a tgtd (the corpus test compares with Debian's tool).

use super::admin::{Admin, Options, Stop, Tgtadm};
use super::options;

/// Records calls; answers `show` queries from a script; fails calls containing `fail_on`.
#[derive(Default)]
struct Fake {
    calls: Vec<Vec<String>>,
    show_target: String,
    fail_on: Option<&'static str>,
}

impl Tgtadm for Fake {
    fn run(&mut self, argv: &[String]) -> i32 {
        self.calls.push(argv.to_vec());
        match self.fail_on {
            Some(f) if argv.join(" ").contains(f) => 22,
            _ => 0,
        }
    }
    fn capture(&mut self, argv: &[String]) -> String {
        let a = argv.join(" ");
        if a.contains("--mode target") {
            self.show_target.clone()
        } else if a.contains("--mode account") {
            "Account list:\n".into()
        } else {
            "System:\n    iSNS=Off\n".into()
        }
    }
}

fn run(args: &[&str], fake: &mut Fake) -> (Result<(), Stop>, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (o, w): (Options, _) = options::parse(&args);
    assert!(w.is_empty(), "{w:?}");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let r = {
        let mut a = Admin::new(o, &mut out, &mut err, fake);
        a.check_root = false;
        a.main()
    };
    (r, String::from_utf8(out).unwrap())
}

fn conf(dir: &std::path::Path) -> String {
    for f in ["d1", "d2", "d3"] {
        std::fs::write(dir.join(f), b"").unwrap();
    }
    let d = dir.display();
    let p = dir.join("t.conf");
    std::fs::write(
        &p,
        format!(
            "<target iqn.x:b>\n  backing-store {d}/d1\n  initiator-address 10.0.0.1\n</target>\n\
             <target iqn.x:a>\n  write-cache off\n  <backing-store {d}/d2>\n    lun 1\n    \
             vendor_id V\n  </backing-store>\n  <backing-store {d}/d3>\n  </backing-store>\n</target>\n"
        ),
    )
    .unwrap();
    p.display().to_string()
}

#[test]
fn pretend_prints_tgt_admins_lines() {
    let dir = tempfile::tempdir().unwrap();
    let c = conf(dir.path());
    let d = dir.path().display();
    let mut fake = Fake::default();
    let (r, out) = run(&["-p", "-e", "-c", &c], &mut fake);
    assert_eq!(r, Ok(()));
    assert!(fake.calls.is_empty(), "pretend runs nothing");
    let head = "tgtadm -C 0 --lld iscsi";
    let wc = "mode_page=8:0:18:0x10:0:0xff:0xff:0:0:0xff:0xff:0xff:0xff:0x80:0x14:0:0:0:0:0:0";
    let want = format!(
        "# Using {c} as configuration file\n\n\
         # default-driver not defined, defaulting to iscsi.\n\n\
         # Adding target: iqn.x:a\n\
         {head} --op new --mode target --tid 1 -T iqn.x:a\n\
         {head} --op new --mode logicalunit --tid 1 --lun 1 -b \"{d}/d2\"     \n\
         {head} --op update --mode logicalunit --tid 1 --lun=1 --params {wc}\n\
         {head} --op update --mode logicalunit --tid 1 --lun=1 --params vendor_id=\"V\"\n\
         {head} --op new --mode logicalunit --tid 1 --lun 2 -b \"{d}/d3\"     \n\
         {head} --op update --mode logicalunit --tid 1 --lun=2 --params {wc}\n\
         {head} --op bind --mode target --tid 1 -I ALL\n\
         # Adding target: iqn.x:b\n\
         {head} --op new --mode target --tid 2 -T iqn.x:b\n\
         {head} --op new --mode logicalunit --tid 2 --lun 1 -b \"{d}/d1\"     \n\
         # Write cache is enabled (default) for lun 1.\n\
         {head} --op bind --mode target --tid 2 -I 10.0.0.1\n\n"
    );
    assert_eq!(out, want);
}

#[test]
fn execute_passes_shell_words_and_stops_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let c = conf(dir.path());
    let d = dir.path().display().to_string();
    let mut fake = Fake::default();
    let (r, out) = run(&["-e", "-c", &c], &mut fake);
    assert_eq!((r, out), (Ok(()), String::new()), "quiet without -v");
    let lu: Vec<&str> = "tgtadm -C 0 --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b"
        .split(' ')
        .collect();
    let mut want: Vec<String> = lu.iter().map(|s| s.to_string()).collect();
    want.push(format!("{d}/d2"));
    assert_eq!(fake.calls[1], want, "quotes and trailing blanks gone");
    assert_eq!(fake.calls[3].last().unwrap(), "vendor_id=V");

    let mut fake = Fake {
        fail_on: Some("vendor_id"),
        ..Fake::default()
    };
    let (r, out) = run(&["-e", "-c", &c], &mut fake);
    assert_eq!(r, Err(Stop(22)));
    assert!(out.ends_with(
        "Command:\n\ttgtadm -C 0 --lld iscsi --op update --mode logicalunit --tid 1 --lun=1 \
         --params vendor_id=\"V\"\nexited with code: 22.\n"
    ));
    assert_eq!(fake.calls.len(), 4, "nothing after the failed call");
    let mut fake = Fake {
        fail_on: Some("vendor_id"),
        ..Fake::default()
    };
    let (r, _) = run(&["-e", "--ignore-errors", "-c", &c], &mut fake);
    assert_eq!(r, Ok(()));
    assert!(fake.calls.len() > 4);
}

#[test]
fn existing_targets_are_kept_and_strays_removed() {
    let dir = tempfile::tempdir().unwrap();
    let c = conf(dir.path());
    let mut fake = Fake {
        show_target: "Target 1: iqn.x:a\n    System information:\nTarget 7: iqn.x:gone\n    \
                      System information:\n"
            .into(),
        ..Fake::default()
    };
    let (r, out) = run(&["-p", "-e", "-c", &c], &mut fake);
    assert_eq!(r, Ok(()));
    assert!(out.contains("# Target iqn.x:a already exists!\n"), "{out}");
    // the next tid follows the largest one tgtd has
    assert!(
        out.contains("--op new --mode target --tid 8 -T iqn.x:b\n"),
        "{out}"
    );
    assert!(
        out.ends_with(
            "# Removing target: iqn.x:gone\ntgtadm -C 0 --mode target --op delete --tid=7\n\n"
        ),
        "{out}"
    );
}
