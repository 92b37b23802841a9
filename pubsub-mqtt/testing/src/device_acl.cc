#include "converge/pubsub/testing/device_acl.h"

namespace converge::pubsub::testing {

std::string DeviceAcl(const std::string& relay_user, const std::string& ingest_user) {
  return "user " + relay_user +
         "\ntopic write devices/+/commands\ntopic write devices/+/twin/desired\n\n" + "user " +
         ingest_user + "\ntopic read devices/+/acks\ntopic read devices/+/twin/reported\n" +
         "topic read devices/+/presence\ntopic read devices/+/telemetry\n\n" +
         "pattern read devices/%u/commands\npattern read devices/%u/twin/desired\n"
         "pattern write devices/%u/acks\npattern write devices/%u/twin/reported\n"
         "pattern write devices/%u/telemetry\npattern readwrite devices/%u/presence\n";
}

}  // namespace converge::pubsub::testing
