//! The plugin's inbound adapters, side by side: the Docker volume plugin protocol ([`plugin`]),
//! the admin socket behind `status` and `rotate` ([`admin`]), Prometheus metrics ([`metrics`]),
//! all served by one bounded accept loop ([`listener`]). Each is a thin layer over a narrow
//! trait the driver offers and implements: [`crate::driver::Backend`] for the protocol,
//! [`crate::driver::Operations`] for the rest; the adapters implement nothing themselves.

pub mod admin;
pub mod listener;
pub mod metrics;
pub mod plugin;
