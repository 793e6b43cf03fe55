"""The schema's numbered migrations: a package so that an installed qgjob ships them."""
