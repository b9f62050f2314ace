# cmake -DSOURCE_DIR=<repository> -P check_includes.cmake
# Fails naming each file and line where a layer includes a header of a layer above it
# (core < distributed < report < app) or includes by a relative path ("../"), which would get
# around the include roots.
set(layers core distributed report app)
set(violations "")
list(LENGTH layers n)
math(EXPR last "${n} - 1")
foreach(i RANGE ${last})
  list(GET layers ${i} layer)
  set(higher "")
  if(i LESS last)
    math(EXPR next "${i} + 1")
    foreach(j RANGE ${next} ${last})
      list(GET layers ${j} h)
      list(APPEND higher ${h})
    endforeach()
  endif()
  list(JOIN higher "|" higher_re)
  file(GLOB_RECURSE files ${SOURCE_DIR}/${layer}/*.h ${SOURCE_DIR}/${layer}/*.cpp
       ${SOURCE_DIR}/${layer}/*.cu ${SOURCE_DIR}/${layer}/*.cuh)
  foreach(f ${files})
    file(STRINGS ${f} lines REGEX "^[ \t]*#[ \t]*include")
    foreach(line ${lines})
      if((higher_re AND line MATCHES "#[ \t]*include[ \t]*[\"<](${higher_re})/")
         OR line MATCHES "#[ \t]*include[ \t]*[\"<]\\.\\./")
        file(RELATIVE_PATH rel ${SOURCE_DIR} ${f})
        string(APPEND violations "  ${rel}: ${line}\n")
      endif()
    endforeach()
  endforeach()
endforeach()
if(violations)
  message(FATAL_ERROR "includes across the layers (core < distributed < report < app; each "
                      "layer includes only its own and lower layers' headers, by their path "
                      "from the repository root):\n${violations}")
endif()
message(STATUS "layering: no layer includes a header of a higher one")
