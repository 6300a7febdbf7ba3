//! tgt-admin's run: the options, the state it keeps while it works (tgt's Perl globals:
//! the parsed file, what tgtd has, the next tid, the current target and option), and
//! `execute`, through which every tgtadm call and comment passes: printed for `-p`, printed
//! then run for `-v`, run for `-e`. Calls run in this process through our tgtadm client
//! ([`Tgtadm`]), with the same argv a shell would give tgtadm.

use super::general::{self, Node, Value};
use super::shell::split_words;
use super::state::{account_names, perl_num, Targets};
use std::collections::HashSet;
use std::io::Write;

/// tgt-admin's command-line settings (Perl's `$execute`, `$delete`, ...).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub execute: bool,
    pub delete: Option<String>,
    pub offline: Option<String>,
    pub ready: Option<String>,
    pub update: Option<String>,
    pub show: bool,
    pub conf: Option<String>,
    pub ignore_errors: bool,
    pub force: bool,
    pub pretend: bool,
    pub dump: bool,
    pub verbose: bool,
    pub help: bool,
    /// `-C`; "0" (tgt-admin's default, passed on as `-C 0`) when not given.
    pub control_port: String,
}

/// Perl's `$x ne 0` on an option value: given, and not "0".
pub fn given(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| s != "0")
}

/// How tgt-admin reaches tgtd: tgtadm's command line, run in-process.
pub trait Tgtadm {
    /// Runs tgtadm with `argv` (`argv[0]` is "tgtadm"), its output going to ours; its status.
    fn run(&mut self, argv: &[String]) -> i32;
    /// Runs tgtadm and returns what it printed on stdout (stderr passes through), as Perl's
    /// backticks do.
    fn capture(&mut self, argv: &[String]) -> String;
}

/// The run ends now with this exit status (its messages already printed).
#[derive(Debug, PartialEq, Eq)]
pub struct Stop(pub i32);

pub type R<T = ()> = Result<T, Stop>;

/// The configuration file tgt-admin reads when no `-c` is given.
pub const DEFAULT_CONF: &str = "/etc/tgt/targets.conf";

/// One tgt-admin run.
pub struct Admin<'a> {
    pub o: Options,
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub tgtadm: &'a mut dyn Tgtadm,
    /// The parsed configuration (`%conf`).
    pub conf: Node,
    /// What tgtd has, as last read.
    pub st: Targets,
    /// `$next_tid`: the tid the next new target gets; "" while undefined.
    pub next_tid: String,
    /// `%existing_accounts`.
    pub accounts: HashSet<String>,
    /// `$default_driver`.
    pub default_driver: Option<String>,
    /// `$target`, `$option`: named in error messages.
    pub target: String,
    pub option: Option<String>,
    /// Refuse to run unprivileged, as tgt-admin does (unit tests turn this off).
    pub check_root: bool,
}

impl<'a> Admin<'a> {
    pub fn new(
        o: Options,
        out: &'a mut dyn Write,
        err: &'a mut dyn Write,
        tgtadm: &'a mut dyn Tgtadm,
    ) -> Admin<'a> {
        Admin {
            o,
            out,
            err,
            tgtadm,
            conf: Node::new(),
            st: Targets::default(),
            next_tid: String::new(),
            accounts: HashSet::new(),
            default_driver: None,
            target: String::new(),
            option: None,
            check_root: true,
        }
    }

    pub fn cp(&self) -> &str {
        &self.o.control_port
    }

    /// Prints to stdout (tgt-admin's `print`).
    pub fn say(&mut self, s: &str) {
        let _ = self.out.write_all(s.as_bytes());
        let _ = self.out.flush();
    }

    /// tgt-admin's `execute`: `-p` prints the line; otherwise `-v` prints it, and a line that
    /// is not a comment runs as a tgtadm call; a failed call ends the run with its status
    /// unless errors are ignored. An empty line is a separator.
    pub fn execute(&mut self, line: &str) -> R {
        if self.o.pretend {
            self.say(&format!("{line}\n"));
            return Ok(());
        }
        if self.o.verbose {
            self.say(&format!("{line}\n"));
        }
        if line.is_empty() || line.starts_with('#') {
            return Ok(());
        }
        let mut argv = split_words(line);
        if argv.first().map(String::as_str) != Some("tgtadm") {
            // Every line tgt-admin builds starts with tgtadm; anything else is ours to refuse.
            let _ = writeln!(self.err, "tgt-admin: not a tgtadm call: {line}");
            return Err(Stop(1));
        }
        argv[0] = "tgtadm".into();
        let code = self.tgtadm.run(&argv);
        if code != 0 && !self.o.ignore_errors {
            self.say(&format!("Command:\n\t{line}\nexited with code: {code}.\n"));
            return Err(Stop(code));
        }
        Ok(())
    }

    /// A tgtadm query's stdout.
    pub fn query(&mut self, args: &str) -> String {
        let line = format!("tgtadm -C {} {args}", self.cp());
        self.tgtadm.capture(&split_words(&line))
    }

    /// tgt-admin refuses to run unprivileged before it asks tgtd anything.
    fn require_root(&mut self) -> R {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if self.check_root && unsafe { libc::geteuid() } != 0 {
            let _ = writeln!(self.err, "You must be root to run this program.");
            return Err(Stop(255));
        }
        Ok(())
    }

    /// `process_targets`: reads `show --mode target`; the next tid is the largest known.
    pub fn process_targets(&mut self) -> R {
        self.require_root()?;
        let show = self.query("--op show --mode target");
        self.st.absorb(&show);
        self.next_tid = self
            .st
            .largest_tid()
            .map(|t| t.to_string())
            .unwrap_or_default();
        Ok(())
    }

    /// `process_accounts`.
    pub fn process_accounts(&mut self) -> R {
        self.require_root()?;
        let show = self.query("--op show --mode account");
        self.accounts.extend(account_names(&show));
        Ok(())
    }

    /// `check_isns`: whether tgtd already has iSNS on.
    pub fn check_isns(&mut self) -> R<bool> {
        self.require_root()?;
        Ok(self.query("--op show --mode sys").contains("iSNS=On"))
    }

    /// `parse_configs`: `-c FILE` or /etc/tgt/targets.conf.
    pub fn parse_configs(&mut self) -> R {
        let path = match &self.o.conf {
            Some(c) if c != "0" => {
                if !std::path::Path::new(c).exists() {
                    // Perl's die exits with errno, here ENOENT from the existence test
                    let _ = writeln!(self.err, "Config file {c} not found. Exiting...");
                    return Err(Stop(libc::ENOENT));
                }
                let c = c.clone();
                self.execute(&format!("# Using {c} as configuration file\n"))?;
                c
            }
            _ => {
                if !std::path::Path::new(DEFAULT_CONF).exists() {
                    let _ = writeln!(self.err, "Config file {DEFAULT_CONF} not found. Exiting...");
                    return Err(Stop(libc::ENOENT));
                }
                DEFAULT_CONF.to_string()
            }
        };
        let mut warnings = Vec::new();
        let parsed = general::parse_file(&path, &mut |w| warnings.push(w));
        for w in warnings {
            let _ = writeln!(self.err, "{w}");
        }
        match parsed {
            Ok(n) => {
                self.conf = n;
                Ok(())
            }
            Err(e) => {
                let _ = writeln!(self.err, "Config::General: {e}");
                // as Perl's die: errno (ENOENT after a missing include), else 255
                let code = match e {
                    general::ConfError::Missing(_) => libc::ENOENT,
                    _ => 255,
                };
                Err(Stop(code))
            }
        }
    }

    /// The `<target>` blocks of the file by name (empty when there are none).
    pub fn conf_targets(&self) -> Vec<String> {
        match self.conf.get("target") {
            Some(Value::Hash(h)) => h.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// `check_value`: a missing or empty value ends the run, naming the option.
    pub fn check_value(&mut self, v: Option<&Value>) -> R {
        if v.is_some_and(Value::has_length) {
            return Ok(());
        }
        let (o, t) = (self.option.clone().unwrap_or_default(), self.target.clone());
        self.say(&format!(
            "\nOption {o} has a missing value!\nCheck your config file for errors (target: {t})\n"
        ));
        Err(Stop(1))
    }

    /// `check_if_hash_array`: an option given twice (or as a block) where one is allowed.
    pub fn check_single(&mut self, v: Option<&Value>, definition: &str) -> R {
        if !matches!(v, Some(Value::List(_) | Value::Hash(_))) {
            return Ok(());
        }
        match self.option.clone().filter(|o| !o.is_empty() && o != "0") {
            Some(o) => {
                let t = self.target.clone();
                self.say(&format!(
                    "Multiple '{definition}' definitions in '{o}' not allowed!\n\
                     Check your config file for errors (target: {t}).\n"
                ));
            }
            None => self.say(&format!(
                "Multiple '{definition}' definitions not allowed!\n\
                 Check your config file for errors.\n"
            )),
        }
        Err(Stop(1))
    }

    /// `$next_tid + 1`.
    pub fn bump_tid(&mut self) {
        self.next_tid = (perl_num(&self.next_tid) + 1).to_string();
    }

    /// `find_max_tid`.
    pub fn max_tid(&self) -> i64 {
        self.st
            .tid
            .values()
            .map(|t| perl_num(t))
            .filter(|t| *t > 0)
            .max()
            .unwrap_or(0)
    }

    /// The run, dispatched as tgt-admin does.
    pub fn main(&mut self) -> R {
        if self.o.show {
            let cp = self.cp().to_string();
            return self.execute(&format!("tgtadm -C {cp} --op show --mode target"));
        }
        if self.o.execute {
            self.parse_configs()?;
            self.process_targets()?;
            self.process_accounts()?;
            self.add_targets(None)?;
            self.remove_targets()
        } else if given(&self.o.delete) {
            self.delete_targets()
        } else if given(&self.o.update) {
            self.process_accounts()?;
            self.update_targets()
        } else if self.o.dump {
            self.dump_config()
        } else if given(&self.o.offline) {
            self.ready_offline_targets("offline")
        } else if given(&self.o.ready) {
            self.ready_offline_targets("ready")
        } else {
            self.say("No action specified.\n");
            Ok(())
        }
    }
}
