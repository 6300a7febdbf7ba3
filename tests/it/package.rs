//! The Debian package: built with scripts/build-deb.sh, unpacked into a scratch root, and
//! its unit's start, reload and stop sequence (packaging/systemd/tgt-service, what
//! curve-tgt.service runs) exercised on a targets.conf with two targets, ACLs and CHAP,
//! against a private socket and port; libiscsi's iscsi-inq logs in with the credentials.
//! systemd is not PID 1 here, so the test runs the sequence the unit runs.

use crate::common::initiator::login;
use crate::common::{free_port, require_tool};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const T1: &str = "iqn.2026-11.io.curve-tgt:pkg-chap";
const T2: &str = "iqn.2026-11.io.curve-tgt:pkg-acl";
const GOOD_INITIATOR: &str = "iqn.2026-11.test:allowed";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// tgtd from the unpacked package, stopped by PID when the test ends.
struct Installed {
    root: PathBuf,
    child: Child,
    sock: PathBuf,
    ctl: u16,
    port: u16,
    conf: PathBuf,
}

impl Installed {
    /// Runs the unit's helper (`tgt-service ACTION`) as systemd would, with the package's
    /// tgtadm and Debian's tgt-admin (until this repository has its own).
    fn service(&self, action: &str) -> Output {
        let ours = self.root.join("usr/sbin/tgt-admin");
        let tgt_admin = if ours.exists() {
            ours
        } else {
            PathBuf::from("/usr/sbin/tgt-admin")
        };
        Command::new(self.root.join("usr/lib/curve-tgt/tgt-service"))
            .arg(action)
            .env("SBIN", self.root.join("usr/sbin"))
            .env("TGT_ADMIN", tgt_admin)
            .env("TGT_CONF", &self.conf)
            .env("CONTROL_PORT", self.ctl.to_string())
            .env("TGT_IPC_SOCKET", &self.sock)
            .output()
            .unwrap()
    }
    fn tgtadm(&self, args: &[&str]) -> String {
        let o = Command::new(self.root.join("usr/sbin/tgtadm"))
            .arg("-C")
            .arg(self.ctl.to_string())
            .args(args)
            .env("TGT_IPC_SOCKET", &self.sock)
            .output()
            .unwrap();
        ok(o, &format!("tgtadm {args:?}"))
    }
    fn inq(&self, initiator: &str, url_auth: &str, target: &str) -> Output {
        Command::new("iscsi-inq")
            .args(["-i", initiator])
            .arg(format!(
                "iscsi://{url_auth}127.0.0.1:{}/{target}/1",
                self.port
            ))
            .output()
            .unwrap()
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_conf(path: &Path, dir: &Path, second: bool) {
    let mut conf = format!(
        "# two targets: CHAP and an address ACL on the first; on the second an address ACL\n\
         # that this host does not match, and an initiator-name rule (tgt admits an initiator\n\
         # when either rule matches)\n\
         <target {T1}>\n    backing-store {}\n    incominguser alice alice-secret-12\n    initiator-address 127.0.0.1\n</target>\n\
         <target {T2}>\n    backing-store {}\n    initiator-address 10.0.0.0/8\n    initiator-name {GOOD_INITIATOR}\n</target>\n",
        dir.join("lu1.img").display(),
        dir.join("lu2.img").display()
    );
    if second {
        conf.push_str(&format!(
            "<target {T2}-extra>\n    backing-store {}\n</target>\n",
            dir.join("lu3.img").display()
        ));
    }
    std::fs::write(path, conf).unwrap();
}

#[test]
fn package_installs_and_its_unit_sequence_serves_targets_conf() {
    require_tool("dpkg-deb");
    require_tool("iscsi-inq");
    require_tool("strip");
    crate::admin::require(crate::admin::DEBIAN_TGT_ADMIN, "tgt");
    let dir = tempfile::tempdir().unwrap();
    let bins = Path::new(env!("CARGO_BIN_EXE_tgtd")).parent().unwrap();

    // Build the package from this build's binaries, and look at it as dpkg will.
    let out = ok(
        Command::new("bash")
            .arg(repo().join("scripts/build-deb.sh"))
            .arg("--no-build")
            .env("BIN_DIR", bins)
            .env("OUT", dir.path().join("deb"))
            .output()
            .unwrap(),
        "build-deb.sh",
    );
    let deb = PathBuf::from(out.lines().last().unwrap().trim());
    assert!(deb.exists(), "{out}");
    let info = ok(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb)
            .output()
            .unwrap(),
        "dpkg-deb -I",
    );
    for field in [
        "Package: curve-tgt",
        "Conflicts: tgt",
        "Replaces: tgt",
        "/etc/tgt/targets.conf",
    ] {
        assert!(info.contains(field), "control lacks {field:?}:\n{info}");
    }

    // Install into a scratch root.
    let root = dir.path().join("root");
    ok(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&root)
            .output()
            .unwrap(),
        "dpkg-deb -x",
    );
    for f in [
        "usr/sbin/tgtd",
        "usr/sbin/tgtadm",
        "usr/share/man/man8/tgtd.8.gz",
        "usr/share/man/man8/tgtadm.8.gz",
        "lib/systemd/system/curve-tgt.service",
        "usr/lib/curve-tgt/tgt-service",
        "etc/default/curve-tgt",
        "etc/tgt/targets.conf",
    ] {
        assert!(root.join(f).exists(), "package lacks /{f}");
    }
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/curve-tgt.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/sbin/tgtd -f",
        "ExecStartPost=/usr/lib/curve-tgt/tgt-service start",
        "ExecReload=/usr/lib/curve-tgt/tgt-service reload",
        "ExecStop=/usr/lib/curve-tgt/tgt-service stop",
        "Alias=tgt.service",
    ] {
        assert!(unit.contains(line), "unit lacks {line:?}:\n{unit}");
    }
    let version = ok(
        Command::new(root.join("usr/sbin/tgtd"))
            .arg("--version")
            .output()
            .unwrap(),
        "tgtd --version",
    );
    assert!(version.starts_with("curve-tgt "), "{version}");

    // The unit's ExecStart (with a private socket and port), then its start sequence.
    for lu in ["lu1.img", "lu2.img", "lu3.img"] {
        std::fs::File::create(dir.path().join(lu))
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
    }
    let conf = dir.path().join("targets.conf");
    write_conf(&conf, dir.path(), false);
    let port = free_port();
    let ctl = 20000 + (port % 10000);
    let sock = dir.path().join("socket");
    let child = Command::new(root.join("usr/sbin/tgtd"))
        .args(["-f", "-C", &ctl.to_string(), "--cores", "0", "--iscsi"])
        .arg(format!("portal=127.0.0.1:{port}"))
        .env("TGT_IPC_SOCKET", &sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Installed {
        root,
        child,
        sock,
        ctl,
        port,
        conf,
    };
    ok(t.service("start"), "tgt-service start");
    assert!(
        t.tgtadm(&["--op", "show", "--mode", "sys"])
            .contains("State: ready"),
        "the sequence ends with the system ready"
    );
    let show = t.tgtadm(&["--lld", "iscsi", "--op", "show", "--mode", "target"]);
    assert!(show.contains(T1) && show.contains(T2), "{show}");
    assert!(show.contains("alice"), "CHAP account bound:\n{show}");

    // CHAP: the configured credentials log in, others do not.
    ok(
        t.inq("iqn.2026-11.test:any", "alice%alice-secret-12@", T1),
        "iscsi-inq with alice's CHAP secret",
    );
    assert!(!t
        .inq("iqn.2026-11.test:any", "alice%wrong-secret-1@", T1)
        .status
        .success());
    assert!(!t.inq("iqn.2026-11.test:any", "", T1).status.success());
    // ACLs: 127.0.0.1 is not in 10.0.0.0/8, so only the named initiator gets in.
    ok(
        t.inq(GOOD_INITIATOR, "", T2),
        "iscsi-inq as the allowed initiator",
    );
    assert!(!t.inq("iqn.2026-11.test:other", "", T2).status.success());

    // Reload re-applies the file: a target added to it appears.
    write_conf(&t.conf, dir.path(), true);
    ok(t.service("reload"), "tgt-service reload");
    let show = t.tgtadm(&["--lld", "iscsi", "--op", "show", "--mode", "target"]);
    assert!(show.contains(&format!("{T2}-extra")), "{show}");

    // Stop refuses while an initiator is connected ...
    let mut held = TcpStream::connect(("127.0.0.1", port)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    login(&mut held, T2, GOOD_INITIATOR);
    let refused = t.service("stop");
    assert!(
        !refused.status.success(),
        "stop with an initiator connected"
    );
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains(GOOD_INITIATOR),
        "names who is connected: {why}"
    );
    assert!(t
        .tgtadm(&["--op", "show", "--mode", "sys"])
        .contains("State: ready"));
    // ... and stops once it is gone: targets deleted, tgtd exits.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = t.service("stop");
        if o.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stop still refused: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut t = t;
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "tgtd still running after stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}
