from reprieve.cli.main import main

main()
