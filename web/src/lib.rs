//! Web — being written.
