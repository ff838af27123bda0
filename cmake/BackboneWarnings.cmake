# backbone_set_warnings(<target>): the project's warning flags for C and C++ sources.
function(backbone_set_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX,C>:-Wall -Wextra -Wno-unused-parameter>)
endfunction()
