echo long > "$(printf 'n%.0s' $(seq 1 150)).txt"
echo utf > "ünïcödé-名前.txt"
echo sp > "with  two spaces.txt"
echo meta > 'semi;colon&amp$dollar.txt'
mkdir -p "$(printf 'p%.0s' $(seq 1 90))/$(printf 'q%.0s' $(seq 1 90))"
echo nested > "$(printf 'p%.0s' $(seq 1 90))/$(printf 'q%.0s' $(seq 1 90))/$(printf 'r%.0s' $(seq 1 90))"
