#include "converge/testing/pg_fixture.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <random>

#include "converge/schemas/migrate.h"
#include "converge/testing/env.h"

namespace converge::testing {

std::string WithDatabase(const std::string& url, const std::string& dbname) {
  const auto scheme = url.find("://");
  if (scheme == std::string::npos) return url + " dbname=" + dbname;  // keyword form
  const auto path = url.find('/', scheme + 3);
  const auto query = url.find('?', scheme + 3);
  if (path == std::string::npos || (query != std::string::npos && path > query)) {
    if (query == std::string::npos) return url + "/" + dbname;
    return url.substr(0, query) + "/" + dbname + url.substr(query);
  }
  const auto end = query == std::string::npos ? url.size() : query;
  return url.substr(0, path + 1) + dbname + url.substr(end);
}

TestDatabase::TestDatabase(bool migrate) {
  admin_url_ = RequireEnv("CONVERGE_PG_URL");
  if (admin_url_.empty()) return;
  static std::atomic<int> counter{0};
  std::random_device rd;
  name_ = "converge_t_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + "_" +
          std::to_string(rd() % 100000);
  try {
    pqxx::connection admin(admin_url_);
    pqxx::nontransaction(admin).exec("CREATE DATABASE " + admin.quote_name(name_));
  } catch (const std::exception& e) {
    ADD_FAILURE() << "cannot create test database: " << e.what();
    return;
  }
  url_ = WithDatabase(admin_url_, name_);
  if (migrate) {
    auto r = schemas::Migrate(url_);
    if (!r.ok()) {
      ADD_FAILURE() << "migrate failed: " << r.status();
      url_.clear();
    }
  }
}

TestDatabase::~TestDatabase() {
  if (name_.empty() || admin_url_.empty()) return;
  try {
    pqxx::connection admin(admin_url_);
    pqxx::nontransaction(admin).exec("DROP DATABASE IF EXISTS " + admin.quote_name(name_) +
                                     " WITH (FORCE)");
  } catch (const std::exception&) {
    // Best effort: the throwaway cluster is deleted by scripts/services.sh anyway.
  }
}

std::unique_ptr<pqxx::connection> TestDatabase::Connect() const {
  return std::make_unique<pqxx::connection>(url_);
}

std::string TestDatabase::Scalar(const std::string& sql) const {
  pqxx::connection c(url_);
  pqxx::work tx(c);
  auto r = tx.exec(sql);
  tx.commit();
  if (r.empty() || r[0].empty() || r[0][0].is_null()) return "";
  return r[0][0].as<std::string>();
}

}  // namespace converge::testing
