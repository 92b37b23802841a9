# converge_test(NAME <name> LABEL unit|integration|robustness SOURCES ... LIBS ... [TIMEOUT s])
# Builds a GoogleTest binary and registers it as one CTest test carrying the label.
# Integration and robustness tests read CONVERGE_PG_URL / CONVERGE_KAFKA_BROKERS /
# CONVERGE_MQTT_URL from the environment that scripts/services.sh exports; they fail (never
# skip) when a service is missing.
function(converge_test)
  cmake_parse_arguments(T "" "NAME;LABEL;TIMEOUT" "SOURCES;LIBS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
  add_test(NAME ${T_NAME} COMMAND ${T_NAME} --gtest_color=no)
  set_tests_properties(${T_NAME} PROPERTIES LABELS ${T_LABEL} TIMEOUT ${T_TIMEOUT})
endfunction()

# converge_library(NAME <target> ALIAS <converge::x> SOURCES ... PUBLIC_LIBS ... PRIVATE_LIBS ...)
function(converge_library)
  cmake_parse_arguments(L "" "NAME;ALIAS" "SOURCES;PUBLIC_LIBS;PRIVATE_LIBS" ${ARGN})
  add_library(${L_NAME} STATIC ${L_SOURCES})
  add_library(${L_ALIAS} ALIAS ${L_NAME})
  target_include_directories(${L_NAME} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
                                       PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(${L_NAME} PUBLIC ${L_PUBLIC_LIBS} PRIVATE ${L_PRIVATE_LIBS})
endfunction()

# converge_executable(NAME <name> SOURCES ... LIBS ...): a product executable, placed in
# ${CMAKE_BINARY_DIR}/bin so scripts and tests find every binary in one place.
function(converge_executable)
  cmake_parse_arguments(E "" "NAME" "SOURCES;LIBS" ${ARGN})
  add_executable(${E_NAME} ${E_SOURCES})
  target_link_libraries(${E_NAME} PRIVATE ${E_LIBS})
  set_target_properties(${E_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
endfunction()
