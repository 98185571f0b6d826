# Word count: the words of ${inputFile}, most frequent first.
# airjobs substitutes the input and parameter macros below, each value shell-quoted.
input=${inputFile}
top=${topN}
fold=${ignoreCase}
[ -n "$top" ] || top=10
if [ "$fold" = "1" ]; then
  tr '[:upper:]' '[:lower:]' < "$input"
else
  cat "$input"
fi | tr -cs '[:alnum:]' '\n' | grep -v '^$' | sort | uniq -c | sort -k1,1nr -k2 | head -n "$top" > counts.txt
wc -w < "$input" | tr -d ' ' > total.txt
echo "counted $(cat total.txt) words in $input"
code=${exitCode}
exit "${code:-0}"
