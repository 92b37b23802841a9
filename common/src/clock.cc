#include "converge/common/clock.h"

namespace converge {

SystemClock& SystemClock::Instance() {
  static SystemClock clock;
  return clock;
}

}  // namespace converge
