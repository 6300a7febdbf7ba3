//! Taking targets away and re-applying them (tgt-admin's `main_delete`, `--delete`,
//! `--update`, and `-e`'s removal of targets the file no longer names). A target with an
//! initiator connected is left alone unless `--force`; forced, its ACLs are unbound and its
//! connections closed before it is deleted.

use super::add::Single;
use super::admin::{given, Admin, Stop, R};

impl Admin<'_> {
    /// `main_delete`: true when the target is in use and was left as it is.
    pub fn main_delete(&mut self, target: &str, tid_given: Option<&str>) -> R<bool> {
        let configured = self.st.tid.get(target).is_some_and(|t| !t.is_empty());
        let cp = self.cp().to_string();
        let tid = self.st.tid.get(target).cloned().unwrap_or_default();
        if self.st.connected(target) {
            if self.o.force {
                self.execute(&format!("# Removing target: {target}"))?;
                for acl in self.st.acls(target) {
                    self.execute(&format!(
                        "tgtadm -C {cp} --op unbind --mode target --tid {tid} -I {acl}"
                    ))?;
                }
                for (sid, cid) in self.st.sessions(target) {
                    self.execute(&format!(
                        "tgtadm -C {cp} --op delete --mode conn --tid {tid} --sid {sid} --cid {cid}"
                    ))?;
                }
                self.execute(&format!(
                    "tgtadm -C {cp} --mode target --op delete --tid={tid}"
                ))?;
            } else {
                let what = if given(&self.o.update) {
                    "updated"
                } else {
                    "deleted"
                };
                self.execute(&format!(
                    "# Target with tid {tid} ({target}) is in use, it won't be {what}."
                ))?;
                return Ok(true);
            }
        } else if !tid.is_empty() {
            self.execute(&format!("# Removing target: {target}"))?;
            self.execute(&format!(
                "tgtadm -C {cp} --mode target --op delete --tid={tid}"
            ))?;
        } else if let Some(t) = tid_given.filter(|t| !t.is_empty()) {
            self.execute(&format!("# Target with tid {t} does not exist!"))?;
        } else {
            self.execute(&format!("# Target with name {target} does not exist!"))?;
        }
        if configured {
            self.execute("")?;
        }
        Ok(false)
    }

    /// `--delete help|ALL|tid=N|NAME`.
    pub fn delete_targets(&mut self) -> R {
        let what = self.o.delete.clone().unwrap_or_default();
        if what == "help" {
            self.say(&help_text("delete", "delete all or selected targets\n\t\t\t\tThe target will be deleted only if it's not used\n\t\t\t\t(no initiator is connected to it).\n\t\t\t\tIf you want to delete targets which are in use,\n\t\t\t\tyou have to add \"--force\" flag."));
            return Ok(());
        }
        self.process_targets()?;
        if what == "ALL" {
            for t in self.st.names_by_tid() {
                self.main_delete(&t, None)?;
            }
        } else if let Some(tid) = what.strip_prefix("tid=") {
            let name = self.st.name.get(tid).cloned().unwrap_or_default();
            self.main_delete(&name, Some(tid))?;
        } else {
            self.main_delete(&what, None)?;
        }
        Ok(())
    }

    /// `check_in_configfile`.
    fn in_configfile(&self, target: &str) -> bool {
        self.conf_targets().iter().any(|t| t == target)
    }

    fn single(&self, target: &str) -> Single {
        Single {
            target: target.to_string(),
            configured: self.st.tid.get(target).is_some_and(|t| !t.is_empty()),
            connected: self.st.connected(target),
            in_configfile: self.in_configfile(target),
        }
    }

    /// `--update help|ALL|tid=N|NAME`: a target the file no longer has is deleted; one it has
    /// is deleted and added again (unless in use).
    pub fn update_targets(&mut self) -> R {
        let what = self.o.update.clone().unwrap_or_default();
        if what == "help" {
            self.say(&help_text("update", "update all or selected targets\n\t\t\t\tThe target will be updated only if it's not used\n\t\t\t\t(no initiator is connected to it).\n\t\t\t\tIf you want to update targets which are in use,\n\t\t\t\tyou have to add \"--force\" flag."));
            return Ok(());
        }
        self.parse_configs()?;
        self.process_targets()?;
        if what == "ALL" {
            // targets tgtd has that the file lacks, then the file's, in name order
            let in_file = self.conf_targets();
            let mut all: Vec<String> = self
                .st
                .names_by_tid()
                .into_iter()
                .filter(|t| !in_file.contains(t))
                .collect();
            all.extend(in_file);
            for t in all {
                let s = self.single(&t);
                if !s.in_configfile && s.configured {
                    self.main_delete(&t, None)?;
                } else {
                    self.add_targets(Some(s))?;
                }
            }
        } else if let Some(tid) = what.strip_prefix("tid=") {
            let name = self.st.name.get(tid).cloned().unwrap_or_default();
            let s = self.single(&name);
            if !s.in_configfile && s.configured {
                self.main_delete(&name, None)?;
            } else if s.configured {
                self.add_targets(Some(s))?;
            } else {
                self.say(&format!(
                    "There is no target with tid {tid}, can't continue!\n"
                ));
                return Err(Stop(1));
            }
        } else {
            let s = self.single(&what);
            if !s.in_configfile && s.configured {
                self.main_delete(&what, None)?;
            } else {
                self.add_targets(Some(s))?;
            }
        }
        Ok(())
    }

    /// After `-e` added the file's targets: delete those tgtd has that the file does not name
    /// (only when the file has `<target>` blocks at all, as tgt-admin does).
    pub fn remove_targets(&mut self) -> R {
        self.process_targets()?;
        if !matches!(
            self.conf.get("target"),
            Some(super::general::Value::Hash(_))
        ) {
            return Ok(());
        }
        let in_file = self.conf_targets();
        for t in self.st.names_by_tid() {
            if !in_file.contains(&t) {
                self.main_delete(&t, None)?;
            }
        }
        Ok(())
    }
}

/// The `--delete help` / `--update help` / `--offline help` text.
pub fn help_text(var: &str, what: &str) -> String {
    format!(
        "      --{var} <value>\t\t{what}\n\nExample usage:\n      --{var} help\t      - display this help\n      --{var} ALL\t      - {var} all targets\n      --{var} tid=4\t      - {var} target 4 (target with tid 4)\n      --{var} iqn.2008-08.com.example:some.target - {var} this target\n\n"
    )
}
