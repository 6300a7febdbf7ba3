//! tgt-admin's views of tgtd and its state switches: `--dump` (the running configuration
//! written back as a targets.conf, secrets replaced by a placeholder) and
//! `--offline`/`--ready` (a target's state).

use super::admin::{given, Admin, Stop, R};
use super::remove::help_text;

impl Admin<'_> {
    /// `--dump`: targets in tid order (tgt's prints them in Perl hash order).
    pub fn dump_config(&mut self) -> R {
        self.process_targets()?;
        let all = self.st.names_by_tid();
        let drivers: Vec<String> = all
            .iter()
            .map(|t| self.st.driver(t).unwrap_or_default())
            .collect();
        let mut uniq = drivers.clone();
        uniq.sort();
        uniq.dedup();
        let mut s = String::new();
        if uniq.len() == 1 {
            s.push_str(&format!("default-driver {}\n\n", uniq[0]));
        }
        for (t, driver) in all.iter().zip(&drivers) {
            // `^Target (\d*): (.+)` on the target's first line
            let name = self
                .st
                .text
                .get(t)
                .and_then(|x| x.lines().next())
                .and_then(|l| l.split_once(": "))
                .map(|(_, n)| n.to_string())
                .unwrap_or_default();
            s.push_str(&format!("<target {name}>\n"));
            if uniq.len() > 1 {
                s.push_str(&format!("\tdriver {driver}\n"));
            }
            for bs in self.st.backing_stores(t) {
                s.push_str(&format!("\tbacking-store {bs}\n"));
            }
            for a in self.st.accounts(t).unwrap_or_default() {
                if let Some(u) = a.strip_suffix(" (outgoing)").filter(|u| !u.is_empty()) {
                    s.push_str(&format!("\toutgoinguser {u} PLEASE_CORRECT_THE_PASSWORD\n"));
                } else if !a.is_empty() {
                    s.push_str(&format!("\tincominguser {a} PLEASE_CORRECT_THE_PASSWORD\n"));
                }
            }
            let acls = self.st.acls(t);
            if acls.len() != 1 || acls[0] != "ALL" {
                for a in acls {
                    // tgt-admin's test for an address: digits, dots, commas and `E` only
                    if !a.is_empty() && a.chars().all(|c| c.is_ascii_digit() || ",.E".contains(c)) {
                        s.push_str(&format!("\tinitiator-address {a}\n"));
                    } else {
                        s.push_str(&format!("\tinitiator-name {a}\n"));
                    }
                }
            }
            s.push_str("</target>\n\n");
        }
        self.say(&s);
        Ok(())
    }

    /// `--offline`/`--ready help|ALL|tid=N|NAME`.
    pub fn ready_offline_targets(&mut self, var: &str) -> R {
        let which = match (given(&self.o.ready), given(&self.o.offline)) {
            (false, _) => self.o.offline.clone().unwrap_or_default(),
            (true, false) => self.o.ready.clone().unwrap_or_default(),
            (true, true) => {
                self.say("Invalid value (you can't use both ready and offline)!\n");
                return Err(Stop(1));
            }
        };
        let cp = self.cp().to_string();
        if which == "help" {
            self.say(&help_text(var, &format!("{var} all or selected targets")));
        } else if which == "ALL" {
            self.process_targets()?;
            for t in self.st.names_by_tid() {
                let tid = self.st.tid[&t].clone();
                self.execute(&format!(
                    "tgtadm -C {cp} --op update --mode target --tid={tid} -n state -v {var}"
                ))?;
            }
        } else if let Some(tid) = which
            .find("tid=")
            .map(|i| &which[i + 4..])
            .filter(|t| !t.is_empty())
        {
            // tgt-admin matches `tid=(.+)` anywhere in the value here
            self.process_targets()?;
            self.execute(&format!(
                "tgtadm -C {cp} --op update --mode target --tid={tid} -n state -v {var}"
            ))?;
        } else {
            self.process_targets()?;
            match self.st.tid.get(&which).filter(|t| !t.is_empty()).cloned() {
                Some(tid) => self.execute(&format!(
                    "tgtadm -C {cp} --op update --mode target --tid={tid} --name=\"{which}\" -n \
                     state -v {var}"
                ))?,
                None => {
                    self.say(&format!(
                        "There is no target with name \"{which}\", can't {var} it!\n"
                    ));
                    return Err(Stop(1));
                }
            }
        }
        Ok(())
    }
}
