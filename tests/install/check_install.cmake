# cmake -DBUILD_DIR=... -DPREFIX=... -DVERSION=... -P check_install.cmake
file(REMOVE_RECURSE ${PREFIX})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${PREFIX}
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install ${BUILD_DIR} --prefix ${PREFIX} failed (${rc})")
endif()
foreach(f bin/deeptrain bin/deeptrain-launch share/deeptrain/slurm/deeptrain.sbatch
          share/deeptrain/examples/deep_convnet_mnist.prototxt share/doc/deeptrain/README.md
          share/doc/deeptrain/testing.md)
  if(NOT EXISTS ${PREFIX}/${f})
    message(FATAL_ERROR "${PREFIX}/${f}: not installed")
  endif()
endforeach()

# The installed binary, from a directory far from the build tree: its libraries resolve (the
# install RPATH to the OpenMP OpenBLAS), it prints its version and parses a shipped example.
execute_process(COMMAND ${PREFIX}/bin/deeptrain --version WORKING_DIRECTORY ${PREFIX}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "deeptrain ${VERSION}")
  message(FATAL_ERROR "installed deeptrain --version: exit ${rc}, output '${out}${err}'")
endif()
execute_process(COMMAND ${PREFIX}/bin/deeptrain train --help WORKING_DIRECTORY ${PREFIX}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "Usage: [^\n]*deeptrain train")
  message(FATAL_ERROR "installed deeptrain train --help: exit ${rc}, output '${out}${err}'")
endif()

# The launcher finds the binary beside it (no DEEPTRAIN_BINARY, no build tree at PREFIX/..).
execute_process(COMMAND env -u DEEPTRAIN_BINARY PATH=/usr/bin:/bin
                        ${PREFIX}/bin/deeptrain-launch --dry-run --mpirun /bin/true -- doctor
                WORKING_DIRECTORY ${PREFIX}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "${PREFIX}/bin/deeptrain doctor")
  message(FATAL_ERROR "installed deeptrain-launch --dry-run: exit ${rc}, output '${out}${err}'")
endif()
message(STATUS "installed into ${PREFIX}: deeptrain ${VERSION} runs, the launcher finds it")
