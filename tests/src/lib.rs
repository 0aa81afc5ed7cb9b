pub mod fixtures {}
