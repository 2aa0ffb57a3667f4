//! `notifications`: under construction.
