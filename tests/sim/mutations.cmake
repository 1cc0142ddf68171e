# Runs each mutated simulator (ferry-sim-mut1..4) and requires that it FAILS:
# the checkers must catch every deliberately wrong rule within a bounded
# number of seeds.
foreach(mut 1 2 3 4)
  execute_process(COMMAND ${SIM}${mut} --seed 1 --seeds 6000 --nodes mix --steps 3000
                          --expect-failure --quiet
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "mutation ${mut}: ${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "mutation ${mut} was NOT caught by the simulator:\n${out}${err}")
  endif()
endforeach()
