from hpcrepro.cli import main

main()
