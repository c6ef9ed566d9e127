//! PROVIDER_DISABLED at run time: which providers take no new payouts and
//! send none of the queued ones.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use nepxy_ledger::Provider;

#[derive(Clone, Default)]
pub struct ProviderSwitches {
    disabled: Arc<RwLock<BTreeSet<Provider>>>,
}

impl ProviderSwitches {
    pub fn new(disabled: BTreeSet<Provider>) -> Self {
        ProviderSwitches {
            disabled: Arc::new(RwLock::new(disabled)),
        }
    }

    pub fn is_disabled(&self, provider: Provider) -> bool {
        self.disabled().contains(&provider)
    }

    pub fn disabled(&self) -> BTreeSet<Provider> {
        match self.disabled.read() {
            Ok(set) => set.clone(),
            // A writer panicked mid-update; the set itself is still whole.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the disabled set, e.g. when an operator enables a provider.
    pub fn set(&self, disabled: BTreeSet<Provider>) {
        let mut guard = match self.disabled.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = disabled;
        tracing::warn!(disabled = ?*guard, "provider switches changed");
    }
}
