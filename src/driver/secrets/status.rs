//! What `status` shows of the swarm tasks holding a token: accessors, lease IDs and times, never
//! a token or a value.

use std::time::Duration;

use tokio::time::Instant;

use super::{TaskKey, TaskSlot};
use crate::driver::{Driver, Edges};

/// One task's secret as `status` shows it: its token's accessor and its leases, never a token
/// or a value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskStatus {
    pub task: String,
    pub secret: String,
    pub service: String,
    pub accessor: String,
    pub token_expires_in_secs: Option<u64>,
    pub leases: Vec<TaskLeaseStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskLeaseStatus {
    pub lease_id: String,
    pub expires_in_secs: Option<u64>,
    pub state: TaskLeaseState,
}

/// What becomes of a task's lease, as `status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskLeaseState {
    /// It is renewed.
    Renew,
    /// It runs to its expiry (a swarm secret cannot change under a running task).
    Ends,
}

impl TaskLeaseState {
    /// Its name in `status`.
    pub fn name(self) -> &'static str {
        match self {
            TaskLeaseState::Renew => "renew",
            TaskLeaseState::Ends => "ends",
        }
    }
}

impl<E: Edges> Driver<E> {
    /// Every task holding a token for a secret of this driver (one waiting more than 2 s on
    /// Vault under way is left out).
    pub async fn task_status(&self) -> Vec<TaskStatus> {
        let slots: Vec<(TaskKey, TaskSlot)> =
            self.tasks.slots.lock().unwrap().iter().map(|(k, s)| (k.clone(), s.clone())).collect();
        let mut out = Vec::with_capacity(slots.len());
        for (key, slot) in slots {
            let Ok(guard) = tokio::time::timeout(Duration::from_secs(2), slot.lock()).await else {
                continue;
            };
            let Some(issued) = guard.as_ref() else { continue };
            let now = Instant::now();
            let secs = |d: Option<Duration>| d.map(|d| d.as_secs());
            out.push(TaskStatus {
                task: key.task.clone(),
                secret: key.secret.clone(),
                service: issued.service.clone(),
                accessor: issued.token.accessor.clone(),
                token_expires_in_secs: secs(issued.deadline.remaining(now)),
                leases: issued
                    .leases
                    .iter()
                    .map(|l| TaskLeaseStatus {
                        lease_id: l.lease.id.clone(),
                        expires_in_secs: match l.deadline {
                            Some(d) => secs(d.remaining(now)),
                            None => None,
                        },
                        state: if l.deadline.is_some() {
                            TaskLeaseState::Renew
                        } else {
                            TaskLeaseState::Ends
                        },
                    })
                    .collect(),
            });
        }
        out
    }
}
