//! `cart`: under construction.
