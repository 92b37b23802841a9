#pragma once

#include <string_view>
#include <vector>

namespace converge::schemas::internal {

struct Migration {
  int version;
  std::string_view name;
  std::string_view sql;
};

const std::vector<Migration>& EmbeddedMigrations();

}  // namespace converge::schemas::internal
