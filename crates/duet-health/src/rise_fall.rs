//! Rise/fall debouncing, shared by VRRP track scripts and backend health checks.

/// Rise/fall debouncing of a pass/fail signal (track scripts, health checks).
///
/// The first result decides at once; afterwards `rise` consecutive passes are needed to go up
/// and `fall` consecutive failures to go down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    up: Option<bool>,
    streak: u32,
}

impl RiseFall {
    /// A new counter; `rise` and `fall` of 0 are treated as 1.
    pub fn new(rise: u32, fall: u32) -> RiseFall {
        RiseFall {
            rise: rise.max(1),
            fall: fall.max(1),
            up: None,
            streak: 0,
        }
    }

    /// Current state: `None` until the first result.
    pub fn is_up(&self) -> Option<bool> {
        self.up
    }

    /// Forces a state (e.g. down after passive failures); the next change needs a full streak.
    pub fn set(&mut self, up: bool) {
        self.up = Some(up);
        self.streak = 0;
    }

    /// Records one result; returns the new state if it changed.
    pub fn record(&mut self, passed: bool) -> Option<bool> {
        match self.up {
            None => {
                self.up = Some(passed);
                self.streak = 0;
                return self.up;
            }
            Some(up) if up == passed => {
                self.streak = 0;
                return None;
            }
            Some(_) => self.streak += 1,
        }
        let needed = if passed { self.rise } else { self.fall };
        if self.streak >= needed {
            self.up = Some(passed);
            self.streak = 0;
            return self.up;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_fall_debounces() {
        let mut rf = RiseFall::new(2, 3);
        assert_eq!(rf.record(true), Some(true));
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(true), None); // streak broken
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(false), None);
        assert_eq!(rf.record(false), Some(false));
        assert_eq!(rf.record(true), None);
        assert_eq!(rf.record(true), Some(true));
    }
}
