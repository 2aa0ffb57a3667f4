//! Every module Banyan has: the one list the app builds processes, configurations and the
//! CLI from.

use banyan_kit::Module;

/// Every module Banyan has, in the order they start.
pub fn all_modules() -> Vec<Box<dyn Module>> {
    vec![
        Box::new(banyan_users::Users),
        Box::new(banyan_catalog::Catalog),
        Box::new(banyan_inventory::Inventory),
        Box::new(banyan_cart::Cart),
        Box::new(banyan_orders::Orders),
        Box::new(banyan_payments::Payments),
        Box::new(banyan_notifications::Notifications),
    ]
}
