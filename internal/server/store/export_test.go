package store

// OpenSQLite opens a SQLite store that the test closes when it ends, for
// the tests outside the package.
var OpenSQLite = openSQLite
