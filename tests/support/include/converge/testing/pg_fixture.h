// TestDatabase: a fresh PostgreSQL database for one test, created on the server named by
// CONVERGE_PG_URL, migrated to the newest Converge schema, and dropped when the object dies.
#pragma once

#include <memory>
#include <string>

#include <pqxx/pqxx>

namespace converge::testing {

class TestDatabase {
 public:
  // Creates "converge_t_<pid>_<n>" and applies all migrations. On failure the test fails
  // (ADD_FAILURE) and url() is empty.
  explicit TestDatabase(bool migrate = true);
  ~TestDatabase();
  TestDatabase(const TestDatabase&) = delete;
  TestDatabase& operator=(const TestDatabase&) = delete;

  const std::string& url() const { return url_; }
  const std::string& name() const { return name_; }
  bool ok() const { return !url_.empty(); }

  // A new connection to this database.
  std::unique_ptr<pqxx::connection> Connect() const;
  // Runs one statement in its own transaction and returns the first column of the first row
  // as text ("" when there is no row).
  std::string Scalar(const std::string& sql) const;
  long long Count(const std::string& sql) const { return std::stoll(Scalar(sql)); }

 private:
  std::string admin_url_;
  std::string name_;
  std::string url_;
};

// Returns `url` with its database name replaced by `dbname` (URL or keyword form).
std::string WithDatabase(const std::string& url, const std::string& dbname);

}  // namespace converge::testing
