//! RFC 7616/8760 digest authentication — being written.
